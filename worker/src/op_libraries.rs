//! The op libraries a worker loads before any model: TensorFlow Text's, which TF
//! Serving links into its binary, then the shared libraries `--op_libraries` names (a
//! tfgate extension: custom ops without a rebuild).
//!
//! Ops and kernels go into TensorFlow's process-wide registries, which a SavedModel's
//! graph is checked against when it loads; a library loaded after a model would leave
//! that model unloadable, so every library is loaded first, and a library that cannot
//! be loaded stops the worker before it serves anything.
//!
//! TensorFlow Text's libraries are looked for in two places, the first that holds any
//! `*.so` wins:
//! 1. beside the libtensorflow the worker resolved, as the wheels lay them out:
//!    `<site-packages>/tensorflow/libtensorflow_cc.so.2` →
//!    `<site-packages>/tensorflow_text/python/ops/` (the development venv);
//! 2. [`IMAGE_TEXT_DIR`], where the Docker image carries them.
//!
//! Neither present: the worker serves without them (logged), and a model using their
//! ops fails to load naming the op. Their version — the wheel's `tensorflow_text-V.dist-info`
//! beside them, or a `VERSION` file in the image's directory — must have TensorFlow's
//! major.minor (their kernels are built against its headers); one that does not is left
//! unloaded, with a warning, rather than stop every worker.
//!
//! A library registering a kernel already registered — the same library again from
//! another path, a second copy of TensorFlow Text — loads without complaint, but every
//! run of its ops then fails with "Multiple OpKernel registrations". So the registered
//! kernels are compared with those before, after each user library and after TensorFlow
//! Text's as a whole (one package's libraries register disjoint kernels), and such a
//! library is refused. The same file named twice is loaded once.

use crate::tf::op_library;
use anyhow::{anyhow, bail};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the Docker image carries TensorFlow Text's op libraries.
pub const IMAGE_TEXT_DIR: &str = "/usr/local/lib/tfgate/ops/tensorflow_text";

/// The flag naming the user's op libraries (the worker's and the gateway's).
pub const FLAG: &str = "--op_libraries";

/// TensorFlow Text's libraries as found: where, their version if known, the files.
#[derive(Debug)]
struct TextLibraries {
    dir: PathBuf,
    version: Option<String>,
    libs: Vec<PathBuf>,
}

/// What became of TensorFlow Text's libraries.
#[derive(Debug, Default)]
pub enum TextStatus {
    #[default]
    NotFound,
    /// Found, but not for this TensorFlow: why.
    Skipped(String),
    Loaded {
        dir: PathBuf,
        version: Option<String>,
        libraries: usize,
    },
}

/// What was loaded, for the startup log.
#[derive(Debug, Default)]
pub struct Loaded {
    pub tensorflow_text: TextStatus,
    /// The user's libraries and the ops each registered.
    pub user: Vec<(PathBuf, Vec<String>)>,
}

impl std::fmt::Display for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tensorflow_text {
            TextStatus::Loaded {
                dir,
                version,
                libraries,
            } => {
                write!(f, "TensorFlow Text")?;
                if let Some(v) = version {
                    write!(f, " {v}")?;
                }
                write!(f, " ({libraries} libraries in {})", dir.display())?
            }
            TextStatus::Skipped(why) => write!(f, "no TensorFlow Text ({why})")?,
            TextStatus::NotFound => write!(f, "no TensorFlow Text (not found)")?,
        }
        for (path, ops) in &self.user {
            write!(f, "; {} (ops: {})", path.display(), ops.join(", "))?;
        }
        Ok(())
    }
}

/// The libtensorflow this process mapped (from `/proc/self/maps`), resolved.
fn libtensorflow() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.contains("/libtensorflow_cc.so") || path.contains("/libtensorflow.so"))
        .and_then(|path| std::fs::canonicalize(path).ok())
}

/// The directories TensorFlow Text's libraries are looked for in, in order.
pub fn text_dirs(libtensorflow: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(site) = libtensorflow.and_then(Path::parent).and_then(Path::parent) {
        dirs.push(site.join("tensorflow_text/python/ops"));
    }
    dirs.push(PathBuf::from(IMAGE_TEXT_DIR));
    dirs
}

/// The `*.so` files in `dir`, sorted (empty if it is not a readable directory).
fn shared_objects(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "so") && p.is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// TensorFlow Text's version as found beside its libraries in `dir`: the image's
/// `VERSION` file, or the wheel's `<site-packages>/tensorflow_text-V.dist-info`.
fn text_version(dir: &Path) -> Option<String> {
    if let Ok(v) = std::fs::read_to_string(dir.join("VERSION")) {
        return Some(v.trim().to_string());
    }
    let site = dir.parent()?.parent()?.parent()?;
    std::fs::read_dir(site).ok()?.find_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        let v = name
            .strip_prefix("tensorflow_text-")?
            .strip_suffix(".dist-info")?;
        Some(v.to_string())
    })
}

/// Whether two versions share major.minor (`2.21.1` and `2.21.0` do).
pub fn same_major_minor(a: &str, b: &str) -> bool {
    let major_minor = |v: &str| {
        let mut parts = v.split('.');
        Some((parts.next()?.to_string(), parts.next()?.to_string()))
    };
    major_minor(a).is_some() && major_minor(a) == major_minor(b)
}

/// Loads TensorFlow Text's libraries and then `user`'s, in order; the first that is
/// missing, fails to load or registers kernels already registered is the error.
pub fn load(user: &[PathBuf]) -> anyhow::Result<Loaded> {
    let mut loaded = Loaded::default();
    let text = text_dirs(libtensorflow().as_deref())
        .into_iter()
        .map(|dir| TextLibraries {
            libs: shared_objects(&dir),
            version: text_version(&dir),
            dir,
        })
        .find(|t| !t.libs.is_empty());
    let tensorflow = op_library::tensorflow_version();
    let text = match text {
        Some(t)
            if t.version
                .as_ref()
                .is_some_and(|v| !same_major_minor(v, &tensorflow)) =>
        {
            let why = format!(
                "{} in {} is not built for TensorFlow {tensorflow}: not loaded",
                t.version.unwrap_or_default(),
                t.dir.display()
            );
            tracing::warn!("TensorFlow Text {why}");
            loaded.tensorflow_text = TextStatus::Skipped(why);
            None
        }
        other => other,
    };
    for path in user {
        if !path.exists() {
            bail!("op library {} ({FLAG}) does not exist", path.display());
        }
    }
    let mut registry = Registry::new()?;
    if let Some(TextLibraries { dir, version, libs }) = text {
        // One package's libraries register disjoint kernels: checked once, together.
        let mut ops = Vec::new();
        for lib in &libs {
            ops.push((lib, registry.load(lib)?));
        }
        registry.check(&dir)?;
        for (lib, ops) in ops {
            registry.owned_by(lib, ops.unwrap_or_default());
        }
        loaded.tensorflow_text = TextStatus::Loaded {
            dir,
            version,
            libraries: libs.len(),
        };
    }
    for path in user {
        if let Some(ops) = registry.load(path)? {
            registry.check(path)?;
            registry.owned_by(path, ops.clone());
            loaded.user.push((path.clone(), ops));
        }
    }
    Ok(loaded)
}

/// Which kernels and ops are registered, and by which library.
struct Registry {
    /// Each registered `KernelDef` (serialized) and how many times it is registered.
    kernels: HashMap<Vec<u8>, usize>,
    /// The library that registered each op loaded so far.
    owners: HashMap<String, PathBuf>,
    /// The files loaded so far, by device and inode.
    files: HashSet<(u64, u64)>,
}

impl Registry {
    fn new() -> anyhow::Result<Registry> {
        Ok(Registry {
            kernels: count(op_library::registered_kernels()?),
            owners: HashMap::new(),
            files: HashSet::new(),
        })
    }

    /// Loads `path` unless that file is loaded already (`None`); the ops it registered.
    /// [`Registry::check`] must follow before anything runs.
    fn load(&mut self, path: &Path) -> anyhow::Result<Option<Vec<String>>> {
        let meta = std::fs::metadata(path)
            .map_err(|e| anyhow!("cannot load op library {}: {e}", path.display()))?;
        if !self.files.insert((meta.dev(), meta.ino())) {
            tracing::info!("op library {} is loaded already", path.display());
            return Ok(None);
        }
        op_library::load(path)
            .map(Some)
            .map_err(|e| anyhow!("cannot load op library {}: {}", path.display(), e.message))
    }

    /// Refuses `what` (the libraries loaded since the last check) if it registered a
    /// kernel that was registered already.
    fn check(&mut self, what: &Path) -> anyhow::Result<()> {
        let after = count(op_library::registered_kernels()?);
        let twice: BTreeSet<String> = after
            .iter()
            .filter(|(def, &n)| n > 1 && n > self.kernels.get(*def).copied().unwrap_or(0))
            .map(|(def, _)| op_library::kernel_op(def))
            .collect();
        if !twice.is_empty() {
            let owners: BTreeSet<String> = twice
                .iter()
                .map(|op| match self.owners.get(op) {
                    Some(owner) => owner.display().to_string(),
                    None => "TensorFlow".to_string(),
                })
                .collect();
            bail!(
                "op library {} registers kernels already registered by {}: {}; loaded twice, \
                 every run of those ops would fail with \"Multiple OpKernel registrations\" \
                 (load each op library once)",
                what.display(),
                owners.into_iter().collect::<Vec<_>>().join(", "),
                twice.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        self.kernels = after;
        Ok(())
    }

    /// Records that `path` registered `ops`.
    fn owned_by(&mut self, path: &Path, ops: Vec<String>) {
        for op in ops {
            self.owners.insert(op, path.to_path_buf());
        }
    }
}

fn count(kernels: Vec<Vec<u8>>) -> HashMap<Vec<u8>, usize> {
    let mut counts = HashMap::with_capacity(kernels.len());
    for k in kernels {
        *counts.entry(k).or_insert(0) += 1;
    }
    counts
}

/// A model load error with a way forward: an op TensorFlow does not know is one an op
/// library would register (TF Decision Forests' ops named as such).
pub fn explain_load_error(message: &str) -> Option<String> {
    const MARK: &str = "Op type not registered '";
    let start = message.find(MARK)? + MARK.len();
    let op = &message[start..start + message[start..].find('\'')?];
    let whose = if op.starts_with("SimpleML") {
        " It is TensorFlow Decision Forests' op: its PyPI wheel is built for an older \
         TensorFlow and cannot load into this one, so tfgate does not carry it; load a \
         build of its inference.so for this TensorFlow"
    } else {
        " Load the shared library that registers it"
    };
    Some(format!(
        "{message} (tfgate: op '{op}' is not registered.{whose} with {FLAG}=PATH, \
         a tfgate extension; see the README's \"Models it serves\")"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensorflow_text_is_looked_for_beside_the_wheel_then_in_the_image() {
        let dirs = text_dirs(Some(Path::new(
            "/venv/lib/python3.11/site-packages/tensorflow/libtensorflow_cc.so.2",
        )));
        assert_eq!(
            dirs,
            [
                PathBuf::from("/venv/lib/python3.11/site-packages/tensorflow_text/python/ops"),
                PathBuf::from(IMAGE_TEXT_DIR)
            ]
        );
        assert_eq!(text_dirs(None), [PathBuf::from(IMAGE_TEXT_DIR)]);
    }

    #[test]
    fn tensorflow_text_must_have_tensorflows_major_minor() {
        assert!(same_major_minor("2.21.1", "2.21.0"));
        assert!(!same_major_minor("2.20.0", "2.21.0"));
        assert!(!same_major_minor("2.2.1", "2.21.0"));
        assert!(!same_major_minor("", "2.21.0"));
    }

    #[test]
    fn tensorflow_text_version_from_the_wheel_or_the_image() {
        let root = std::env::temp_dir().join(format!("tfgate-text-{}", std::process::id()));
        let ops = root.join("site-packages/tensorflow_text/python/ops");
        std::fs::create_dir_all(&ops).unwrap();
        assert_eq!(text_version(&ops), None);
        std::fs::create_dir_all(root.join("site-packages/tensorflow_text-2.21.1.dist-info"))
            .unwrap();
        assert_eq!(text_version(&ops).as_deref(), Some("2.21.1"));
        std::fs::write(ops.join("VERSION"), "2.21.0\n").unwrap();
        assert_eq!(text_version(&ops).as_deref(), Some("2.21.0"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_unregistered_op_is_named_with_the_flag() {
        let e = "Op type not registered 'ZeroOut' in binary running on h. Make sure ...";
        let got = explain_load_error(e).unwrap();
        assert!(got.starts_with(e));
        assert!(got.contains("op 'ZeroOut' is not registered. Load the shared library"));
        assert!(got.contains("--op_libraries=PATH"));
    }

    #[test]
    fn decision_forests_ops_are_named_as_such() {
        let e = "Op type not registered 'SimpleMLCreateModelResource' in binary";
        let got = explain_load_error(e).unwrap();
        assert!(got.contains("TensorFlow Decision Forests' op"));
        assert!(got.contains("--op_libraries=PATH"));
    }

    #[test]
    fn other_errors_are_left_alone() {
        assert_eq!(explain_load_error("Could not find SavedModel .pb"), None);
    }
}
