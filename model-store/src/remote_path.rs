//! A base path or config file on a remote store: `gs://bucket/prefix` or
//! `s3://bucket/prefix`, as TensorFlow's file systems spell them.

use object_store::path::Path;
use std::fmt;

/// The stores tfgate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Google Cloud Storage (`gs://`), as TensorFlow's built-in `gs` file system.
    Gcs,
    /// Amazon S3 and S3-compatible servers (`s3://`: MinIO, Ceph, moto...).
    S3,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Gcs => "gs",
            Scheme::S3 => "s3",
        }
    }
}

/// A parsed remote path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RemotePath {
    pub scheme: Scheme,
    pub bucket: String,
    /// The key prefix inside the bucket, without leading or trailing `/` (empty for the
    /// bucket's root).
    pub key: Path,
}

impl fmt::Display for RemotePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.name(), self.bucket)?;
        if !self.key.as_ref().is_empty() {
            write!(f, "/{}", self.key)?;
        }
        Ok(())
    }
}

/// `None` for a local path (no `scheme://`); the remote path for `gs://` and `s3://`;
/// an error naming the scheme for any other URI, and for one without a bucket.
pub fn parse(uri: &str) -> Result<Option<RemotePath>, String> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(None);
    };
    let scheme = match scheme {
        "gs" => Scheme::Gcs,
        "s3" => Scheme::S3,
        other => {
            return Err(format!(
                "{uri}: file system scheme '{other}' is not supported (tfgate reads local \
                 paths, gs:// and s3://)"
            ))
        }
    };
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("{uri}: no bucket name after {}://", scheme.name()));
    }
    let key = key.trim_matches('/');
    let key = Path::parse(key).map_err(|e| format!("{uri}: {e}"))?;
    Ok(Some(RemotePath {
        scheme,
        bucket: bucket.to_string(),
        key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_not_remote() {
        assert_eq!(parse("/models/x"), Ok(None));
        assert_eq!(parse("models/x"), Ok(None));
    }

    #[test]
    fn buckets_and_keys() {
        let p = parse("s3://bucket/models/x/").unwrap().unwrap();
        assert_eq!((p.scheme, p.bucket.as_str()), (Scheme::S3, "bucket"));
        assert_eq!(p.key.as_ref(), "models/x");
        assert_eq!(p.to_string(), "s3://bucket/models/x");
        let p = parse("gs://b").unwrap().unwrap();
        assert_eq!((p.scheme, p.key.as_ref()), (Scheme::Gcs, ""));
        assert_eq!(p.to_string(), "gs://b");
    }

    #[test]
    fn other_schemes_and_no_bucket_are_refused_by_name() {
        let e = parse("hdfs://nn/models").unwrap_err();
        assert!(
            e.contains("file system scheme 'hdfs' is not supported"),
            "{e}"
        );
        let e = parse("s3:///models").unwrap_err();
        assert!(e.contains("no bucket name after s3://"), "{e}");
        assert!(parse("gs://b/a/../c").is_err());
    }
}
