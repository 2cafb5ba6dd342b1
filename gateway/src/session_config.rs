//! The `tensorflow.ConfigProto` every worker's sessions use, built as TF Serving builds
//! it (`server.cc`): `--tensorflow_session_config_file` first, then the GPU-memory and
//! parallelism flags written over it — always, even at their defaults.

use crate::config::Flags;
use crate::error::ServingError;
use tfgate_proto::tensorflow::ConfigProto;

/// The session config for the flags.
pub fn session_config(flags: &Flags) -> Result<ConfigProto, ServingError> {
    let mut config: ConfigProto = if flags.tensorflow_session_config_file.is_empty() {
        ConfigProto::default()
    } else {
        crate::text_format::read_file(
            &flags.tensorflow_session_config_file,
            "tensorflow.ConfigProto",
        )?
    };
    config
        .gpu_options
        .get_or_insert_with(Default::default)
        .per_process_gpu_memory_fraction = flags.per_process_gpu_memory_fraction;
    let (intra, inter, session) = (
        flags.tensorflow_intra_op_parallelism,
        flags.tensorflow_inter_op_parallelism,
        flags.tensorflow_session_parallelism,
    );
    if intra > 0 && inter > 0 && session > 0 {
        return Err(ServingError::invalid_argument(
            "Either configure server_options.tensorflow_session_parallelism or (server_options.tensorflow_intra_op_parallelism, server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all.",
        ));
    }
    if intra > 0 || inter > 0 {
        config.intra_op_parallelism_threads = intra;
        config.inter_op_parallelism_threads = inter;
    } else {
        config.intra_op_parallelism_threads = session;
        config.inter_op_parallelism_threads = session;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        crate::config::parse_command_line(
            std::iter::once("tfgate")
                .chain(args.iter().copied())
                .map(String::from)
                .collect(),
        )
    }

    #[test]
    fn flags_override_the_file_as_in_tf_serving() {
        let file = std::env::temp_dir().join(format!("tfgate-session-{}", std::process::id()));
        std::fs::write(
            &file,
            "intra_op_parallelism_threads: 7 gpu_options { allow_growth: true per_process_gpu_memory_fraction: 0.9 } log_device_placement: true",
        )
        .unwrap();
        let arg = format!("--tensorflow_session_config_file={}", file.display());
        let c = session_config(&flags(&[&arg, "--per_process_gpu_memory_fraction=0.25"])).unwrap();
        assert!(c.log_device_placement);
        let gpu = c.gpu_options.unwrap();
        assert!(gpu.allow_growth);
        assert_eq!(gpu.per_process_gpu_memory_fraction, 0.25);
        assert_eq!(c.intra_op_parallelism_threads, 0, "the flag's 0 wins");
        let c = session_config(&flags(&["--tensorflow_session_parallelism=3"])).unwrap();
        assert_eq!(
            (
                c.intra_op_parallelism_threads,
                c.inter_op_parallelism_threads
            ),
            (3, 3)
        );
        let c = session_config(&flags(&[
            "--tensorflow_session_parallelism=3",
            "--tensorflow_inter_op_parallelism=-1",
        ]))
        .unwrap();
        assert_eq!(
            (
                c.intra_op_parallelism_threads,
                c.inter_op_parallelism_threads
            ),
            (3, 3),
            "-1 is not > 0"
        );
        let e = session_config(&flags(&[
            "--tensorflow_session_parallelism=1",
            "--tensorflow_intra_op_parallelism=1",
            "--tensorflow_inter_op_parallelism=1",
        ]))
        .unwrap_err();
        assert!(e.message.ends_with("You cannot configure all."));
        std::fs::remove_file(&file).unwrap();
    }
}
