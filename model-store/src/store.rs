//! Opening a bucket with the endpoint and credentials deployments already set: AWS's and
//! Google's conventional environment, the AWS shared files with `AWS_PROFILE` (TF Serving
//! read them up to 2.6), TensorFlow's old `S3_*` variables, and `STORAGE_EMULATOR_HOST`.
//! No secret is logged or put into an error: only where the credentials came from.

use crate::remote_path::{RemotePath, Scheme};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A snapshot of the process environment (a map, so tests can give their own).
#[derive(Clone, Debug, Default)]
pub struct Env(pub BTreeMap<String, String>);

impl Env {
    pub fn from_process() -> Env {
        Env(std::env::vars().collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// The store client's own retries stay short, so that a missing bucket or a refused
/// credential reaches the log in seconds: the mirror retries whole fetches itself, under
/// `--max_num_load_retries` and `--load_retry_interval_micros`.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
    }
}

/// Connection and stall bounds; no bound on a whole request, since one variables file
/// may take minutes to download.
fn client_options(allow_http: bool, allow_invalid_certificates: bool) -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_read_timeout(Duration::from_secs(30))
        .with_timeout_disabled()
        .with_allow_http(allow_http)
        .with_allow_invalid_certificates(allow_invalid_certificates)
}

/// What a store was opened with, for the log (no secrets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub endpoint: String,
    pub credentials: String,
}

/// Opens the bucket `remote` names.
pub fn open(remote: &RemotePath, env: &Env) -> Result<(Arc<dyn ObjectStore>, Opened), String> {
    install_crypto_provider();
    match remote.scheme {
        Scheme::S3 => open_s3(remote, env),
        Scheme::Gcs => open_gcs(remote, env),
    }
}

/// reqwest is built without a TLS provider of its own: the process's is rustls on ring,
/// as the gateway's listeners.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The S3 settings, from the variables a deployment may have set: `AWS_*` first, then
/// the profile's files, then TensorFlow's `S3_*`, then defaults.
#[derive(Debug, Default, PartialEq, Eq)]
struct S3Settings {
    /// `AWS_*` keys object_store reads (lower case), with their values.
    config: Vec<(String, String)>,
    endpoint: Option<String>,
    region: Option<String>,
    allow_invalid_certificates: bool,
    credentials: String,
}

fn s3_settings(env: &Env) -> Result<S3Settings, String> {
    let mut s = S3Settings::default();
    for (k, v) in &env.0 {
        if k.starts_with("AWS_") && !v.is_empty() {
            s.config.push((k.to_ascii_lowercase(), v.clone()));
        }
    }
    s.endpoint = env
        .get("AWS_ENDPOINT_URL_S3")
        .or_else(|| env.get("AWS_ENDPOINT_URL"))
        .or_else(|| env.get("AWS_ENDPOINT"))
        .map(str::to_string);
    s.region = env
        .get("AWS_REGION")
        .or_else(|| env.get("AWS_DEFAULT_REGION"))
        .map(str::to_string);
    s.credentials = if env.get("AWS_ACCESS_KEY_ID").is_some() {
        "AWS_ACCESS_KEY_ID".into()
    } else if env.get("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
        "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)".into()
    } else if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
        || env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
    {
        "the container credentials endpoint".into()
    } else {
        String::new()
    };
    // The shared files: credentials when the environment has none, region and endpoint
    // when it does not name them.
    let profile = env.get("AWS_PROFILE").unwrap_or("default").to_string();
    let home = env.get("HOME").map(|h| format!("{h}/.aws"));
    let credentials_file = env
        .get("AWS_SHARED_CREDENTIALS_FILE")
        .map(str::to_string)
        .or_else(|| home.as_ref().map(|h| format!("{h}/credentials")));
    let config_file = env
        .get("AWS_CONFIG_FILE")
        .map(str::to_string)
        .or_else(|| home.as_ref().map(|h| format!("{h}/config")));
    let named = env.get("AWS_PROFILE").is_some();
    let from_credentials = read_profile(credentials_file.as_deref(), &profile, false, named)?;
    let from_config = read_profile(config_file.as_deref(), &profile, true, named)?;
    if named && from_credentials.is_none() && from_config.is_none() {
        return Err(format!(
            "AWS_PROFILE={profile}: no such profile in {} or {}",
            credentials_file
                .as_deref()
                .unwrap_or("(no credentials file)"),
            config_file.as_deref().unwrap_or("(no config file)")
        ));
    }
    if s.credentials.is_empty() {
        // The credentials file wins over the config file, as in the AWS CLI.
        for section in [&from_credentials, &from_config].into_iter().flatten() {
            let id = section.get("aws_access_key_id");
            let secret = section.get("aws_secret_access_key");
            if let (Some(id), Some(secret)) = (id, secret) {
                s.config.push(("aws_access_key_id".into(), id.clone()));
                s.config
                    .push(("aws_secret_access_key".into(), secret.clone()));
                if let Some(token) = section.get("aws_session_token") {
                    s.config.push(("aws_session_token".into(), token.clone()));
                }
                s.credentials = format!("profile {profile}");
                break;
            }
        }
    }
    for section in [&from_config, &from_credentials].into_iter().flatten() {
        if s.region.is_none() {
            s.region = section.get("region").cloned();
        }
        if s.endpoint.is_none() {
            s.endpoint = section.get("endpoint_url").cloned();
        }
    }
    // TensorFlow's S3 file system (TF Serving up to 2.6) read these.
    if s.endpoint.is_none() {
        if let Some(e) = env.get("S3_ENDPOINT") {
            s.endpoint = Some(if e.contains("://") {
                e.to_string()
            } else if env.get("S3_USE_HTTPS") == Some("0") {
                format!("http://{e}")
            } else {
                format!("https://{e}")
            });
        }
    }
    if s.region.is_none() {
        s.region = env.get("S3_REGION").map(str::to_string);
    }
    s.allow_invalid_certificates = env.get("S3_VERIFY_SSL") == Some("0");
    if s.credentials.is_empty() {
        s.credentials = "the instance metadata service (no credentials in the environment)".into();
    }
    Ok(s)
}

/// The keys of `[profile]` (or `[profile NAME]` in the config file), if the file and
/// the section exist. A file that exists but cannot be read or parsed is an error only
/// when the profile was named.
fn read_profile(
    path: Option<&str>,
    profile: &str,
    config_file: bool,
    named: bool,
) -> Result<Option<BTreeMap<String, String>>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if named => return Err(format!("{path}: {e}")),
        Err(_) => return Ok(None),
    };
    let ini = match ini::Ini::load_from_str(&text) {
        Ok(i) => i,
        Err(e) if named => return Err(format!("{path}: {e}")),
        Err(_) => return Ok(None),
    };
    let section = if config_file && profile != "default" {
        format!("profile {profile}")
    } else {
        profile.to_string()
    };
    Ok(ini.section(Some(section.as_str())).map(|props| {
        props
            .iter()
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect()
    }))
}

fn open_s3(remote: &RemotePath, env: &Env) -> Result<(Arc<dyn ObjectStore>, Opened), String> {
    let s = s3_settings(env)?;
    let mut builder = AmazonS3Builder::new();
    for (k, v) in &s.config {
        if let Ok(key) = k.parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(key, v);
        }
    }
    let endpoint = s.endpoint.clone();
    if let Some(e) = &endpoint {
        builder = builder.with_endpoint(e);
    }
    let region = s.region.clone().unwrap_or_else(|| "us-east-1".into());
    let allow_http = endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"))
        || env.get("AWS_ALLOW_HTTP") == Some("true");
    let store = builder
        .with_region(&region)
        .with_bucket_name(&remote.bucket)
        .with_retry(retry())
        .with_client_options(client_options(allow_http, s.allow_invalid_certificates))
        .build()
        .map_err(|e| format!("{remote}: {e}"))?;
    Ok((
        Arc::new(store),
        Opened {
            endpoint: format!(
                "{} (region {region})",
                endpoint.as_deref().unwrap_or("AWS S3")
            ),
            credentials: s.credentials,
        },
    ))
}

fn open_gcs(remote: &RemotePath, env: &Env) -> Result<(Arc<dyn ObjectStore>, Opened), String> {
    let mut builder = GoogleCloudStorageBuilder::new();
    for (k, v) in &env.0 {
        if k.starts_with("GOOGLE_") && !v.is_empty() {
            if let Ok(key) = k.to_ascii_lowercase().parse::<GoogleConfigKey>() {
                builder = builder.with_config(key, v);
            }
        }
    }
    let (endpoint, credentials, allow_http) = match env.get("STORAGE_EMULATOR_HOST") {
        // Google's client libraries send everything to an emulator, unsigned.
        Some(host) => {
            let url = if host.contains("://") {
                host.trim_end_matches('/').to_string()
            } else {
                format!("http://{}", host.trim_end_matches('/'))
            };
            builder = builder.with_base_url(&url).with_skip_signature(true);
            let http = url.starts_with("http://");
            (url, "none (STORAGE_EMULATOR_HOST)".to_string(), http)
        }
        None => {
            let credentials = if let Some(p) = env.get("GOOGLE_APPLICATION_CREDENTIALS") {
                format!("GOOGLE_APPLICATION_CREDENTIALS ({p})")
            } else if env.get("GOOGLE_SERVICE_ACCOUNT").is_some()
                || env.get("GOOGLE_SERVICE_ACCOUNT_PATH").is_some()
                || env.get("GOOGLE_SERVICE_ACCOUNT_KEY").is_some()
            {
                "a service account key (GOOGLE_SERVICE_ACCOUNT*)".to_string()
            } else {
                "application default credentials or the metadata server".to_string()
            };
            (
                "https://storage.googleapis.com".to_string(),
                credentials,
                false,
            )
        }
    };
    let store = builder
        .with_bucket_name(&remote.bucket)
        .with_retry(retry())
        .with_client_options(client_options(allow_http, false))
        .build()
        .map_err(|e| format!("{remote}: {e}"))?;
    Ok((
        Arc::new(store),
        Opened {
            endpoint,
            credentials,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    fn value<'a>(s: &'a S3Settings, key: &str) -> Option<&'a str> {
        s.config
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn aws_variables_come_first() {
        let s = s3_settings(&env(&[
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_REGION", "eu-west-1"),
            ("S3_ENDPOINT", "other:1"),
            ("HOME", "/nonexistent"),
        ]))
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(value(&s, "aws_access_key_id"), Some("id"));
        assert_eq!(s.credentials, "AWS_ACCESS_KEY_ID");
    }

    #[test]
    fn tensorflow_s3_variables_are_translated() {
        let s = s3_settings(&env(&[
            ("S3_ENDPOINT", "minio:9000"),
            ("S3_USE_HTTPS", "0"),
            ("S3_VERIFY_SSL", "0"),
            ("S3_REGION", "us-west-2"),
            ("HOME", "/nonexistent"),
        ]))
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(s.region.as_deref(), Some("us-west-2"));
        assert!(s.allow_invalid_certificates);
        let s = s3_settings(&env(&[("S3_ENDPOINT", "minio:9000"), ("HOME", "/x")])).unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("https://minio:9000"));
        assert!(!s.allow_invalid_certificates);
    }

    #[test]
    fn a_named_profile_reads_the_shared_files() {
        let dir = std::env::temp_dir().join(format!("tfgate-aws-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let creds = dir.join("credentials");
        let config = dir.join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = d\naws_secret_access_key = ds\n\
             [team]\naws_access_key_id = t\naws_secret_access_key = ts\naws_session_token = tok\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[profile team]\nregion = ap-south-1\nendpoint_url = http://127.0.0.1:1\n",
        )
        .unwrap();
        let base = [
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
        ];
        let mut with_profile = base.to_vec();
        with_profile.push(("AWS_PROFILE", "team"));
        let s = s3_settings(&env(&with_profile)).unwrap();
        assert_eq!(value(&s, "aws_access_key_id"), Some("t"));
        assert_eq!(value(&s, "aws_session_token"), Some("tok"));
        assert_eq!(s.region.as_deref(), Some("ap-south-1"));
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(s.credentials, "profile team");
        // Without AWS_PROFILE: the default profile.
        let s = s3_settings(&env(&base)).unwrap();
        assert_eq!(value(&s, "aws_access_key_id"), Some("d"));
        // Variables in the environment win over the files.
        let mut with_env = with_profile.clone();
        with_env.push(("AWS_ACCESS_KEY_ID", "e"));
        with_env.push(("AWS_SECRET_ACCESS_KEY", "es"));
        let s = s3_settings(&env(&with_env)).unwrap();
        assert_eq!(value(&s, "aws_access_key_id"), Some("e"));
        // A profile that is not there is an error naming it.
        let mut missing = base.to_vec();
        missing.push(("AWS_PROFILE", "nope"));
        let e = s3_settings(&env(&missing)).unwrap_err();
        assert!(e.contains("AWS_PROFILE=nope: no such profile"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secrets_stay_out_of_what_is_logged() {
        let remote = crate::remote_path::parse("s3://bucket/m").unwrap().unwrap();
        let (_, opened) = open(
            &remote,
            &env(&[
                ("AWS_ACCESS_KEY_ID", "AKIDSECRETID"),
                ("AWS_SECRET_ACCESS_KEY", "VERYSECRET"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ]),
        )
        .unwrap();
        let shown = format!("{opened:?}");
        assert!(
            !shown.contains("VERYSECRET") && !shown.contains("AKIDSECRETID"),
            "{shown}"
        );
    }
}
