//! Reading a base path on a store: its version numbers, and one version's files copied
//! into a directory. Object stores have no directories: a `dir/` marker object (what
//! TensorFlow writes to `gs://`) lists as a zero-byte object named like the prefix it
//! marks, so a zero-byte object that is also a prefix is a directory, not a file.

use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path as FsPath, PathBuf};
use tokio::io::AsyncWriteExt;

/// `ParseVersionNumber`: a child named by a non-negative decimal integer.
fn version_number(name: &str) -> Option<i64> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The version numbers under `base`: children that are prefixes (`base/7/...`) or
/// zero-byte markers (`base/7/`, an empty version directory).
pub async fn list_versions(store: &dyn ObjectStore, base: &Path) -> Result<BTreeSet<i64>, String> {
    let prefix = (!base.as_ref().is_empty()).then_some(base);
    let listed = store
        .list_with_delimiter(prefix)
        .await
        .map_err(|e| e.to_string())?;
    let child = |p: &Path| -> Option<i64> {
        let mut rest = p.prefix_match(base)?;
        let name = rest.next()?;
        rest.next()
            .is_none()
            .then(|| version_number(name.as_ref()))?
    };
    let mut versions: BTreeSet<i64> = listed.common_prefixes.iter().filter_map(child).collect();
    versions.extend(
        listed
            .objects
            .iter()
            .filter(|o| o.size == 0)
            .filter_map(|o| child(&o.location)),
    );
    Ok(versions)
}

/// One file of a version: its path relative to the version, and its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub object: Path,
    pub relative: PathBuf,
    pub size: u64,
}

/// A version's listing: its files, and its directories (markers of empty ones included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub files: Vec<File>,
    pub dirs: BTreeSet<PathBuf>,
}

impl Listing {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// A key's parts below `prefix` as a relative path, refusing parts a file system would
/// read as something else (`.`, `..`).
fn relative(location: &Path, prefix: &Path) -> Result<Option<PathBuf>, String> {
    let Some(parts) = location.prefix_match(prefix) else {
        return Ok(None);
    };
    let mut out = PathBuf::new();
    for part in parts {
        let p = part.as_ref();
        if p.is_empty() || p == "." || p == ".." || p.contains('\0') {
            return Err(format!("object {location} has a name no file can take"));
        }
        out.push(p);
    }
    Ok(Some(out))
}

/// Lists every object under `version` (recursively) and sorts them into files and
/// directories.
pub async fn list_version(store: &dyn ObjectStore, version: &Path) -> Result<Listing, String> {
    let mut objects: Vec<ObjectMeta> = Vec::new();
    let mut stream = store.list(Some(version));
    while let Some(o) = stream.next().await {
        objects.push(o.map_err(|e| e.to_string())?);
    }
    sort_listing(&objects, version)
}

fn sort_listing(objects: &[ObjectMeta], version: &Path) -> Result<Listing, String> {
    let mut listing = Listing::default();
    let mut entries: BTreeMap<PathBuf, u64> = BTreeMap::new();
    for o in objects {
        match relative(&o.location, version)? {
            // The version's own marker (`base/7/`).
            Some(r) if r.as_os_str().is_empty() => {}
            Some(r) => {
                entries.insert(r, o.size);
            }
            None => {}
        }
    }
    // Every parent of an entry is a directory.
    for r in entries.keys() {
        let mut parent = r.parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            listing.dirs.insert(p.to_path_buf());
            parent = p.parent();
        }
    }
    for (r, size) in entries {
        if listing.dirs.contains(&r) {
            if size != 0 {
                return Err(format!(
                    "{}/{} is both a file of {size} bytes and a directory",
                    version,
                    r.display()
                ));
            }
            continue;
        }
        listing.files.push(File {
            object: objects_path(version, &r),
            relative: r,
            size,
        });
    }
    Ok(listing)
}

fn objects_path(version: &Path, relative: &FsPath) -> Path {
    relative.iter().fold(version.clone(), |p, part| {
        p.join(part.to_string_lossy().as_ref())
    })
}

/// Copies `listing` into `into` (which must not exist). Each file must arrive whole: a
/// body shorter or longer than the listed size is an error, as is any stream error.
pub async fn download(
    store: &dyn ObjectStore,
    listing: &Listing,
    into: &FsPath,
) -> Result<(), String> {
    tokio::fs::create_dir_all(into)
        .await
        .map_err(|e| format!("{}: {e}", into.display()))?;
    for d in &listing.dirs {
        let p = into.join(d);
        tokio::fs::create_dir_all(&p)
            .await
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    for f in &listing.files {
        let path = into.join(&f.relative);
        if f.size == 0 && is_marker(store, &f.object).await? {
            tokio::fs::create_dir_all(&path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            continue;
        }
        let mut out = tokio::fs::File::create(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let got = store
            .get(&f.object)
            .await
            .map_err(|e| format!("{}: {e}", f.object))?;
        let mut body = got.into_stream();
        let mut written: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                format!(
                    "{}: cut off after {written} of {} bytes: {e}",
                    f.object, f.size
                )
            })?;
            written += chunk.len() as u64;
            if written > f.size {
                return Err(format!(
                    "{}: more than the {} bytes listed",
                    f.object, f.size
                ));
            }
            out.write_all(&chunk)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if written != f.size {
            return Err(format!(
                "{}: cut off after {written} of {} bytes",
                f.object, f.size
            ));
        }
        out.flush()
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// A zero-byte object that is no prefix is either an empty file or the `dir/` marker of an
/// empty directory (an empty `assets/`), whose listed name lost its slash: only the file
/// answers under that name.
async fn is_marker(store: &dyn ObjectStore, object: &Path) -> Result<bool, String> {
    match store.head(object).await {
        Ok(_) => Ok(false),
        Err(object_store::Error::NotFound { .. }) => Ok(true),
        Err(e) => Err(format!("{object}: {e}")),
    }
}

/// Why a listed version is not yet a whole SavedModel, if it is not: tools upload a
/// directory file by file (`saved_model.pb` sorts before `variables/`, and one large
/// variables shard can take minutes), and a worker that loaded half a version would
/// serve it broken. Whole means `saved_model.pb` (or `.pbtxt`), and, where a checkpoint
/// is listed, its index with every `-of-N` data shard. (A `saved_model.pb` that names a
/// checkpoint none of which is listed yet is caught after it is fetched:
/// [`expects_variables`].)
pub fn incomplete(listing: &Listing) -> Option<String> {
    let names: BTreeSet<&FsPath> = listing.files.iter().map(|f| f.relative.as_path()).collect();
    if !names.contains(FsPath::new("saved_model.pb"))
        && !names.contains(FsPath::new("saved_model.pbtxt"))
    {
        return Some("no saved_model.pb yet".into());
    }
    let mut shards: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for n in &names {
        let Some(name) = n.strip_prefix("variables").ok().and_then(|r| r.to_str()) else {
            continue;
        };
        if let Some((i, of)) = shard(name) {
            shards.entry(of).or_default().insert(i);
        }
    }
    let index = names.contains(FsPath::new("variables/variables.index"));
    if shards.is_empty() && !index {
        return None;
    }
    if !index {
        return Some("variables/variables.index not there yet".into());
    }
    if shards.is_empty() {
        return Some("no variables/variables.data-* shard yet".into());
    }
    for (of, have) in shards {
        if have.len() as u32 != of {
            return Some(format!(
                "{} of the {of} variables data shards there",
                have.len()
            ));
        }
    }
    None
}

/// `variables.data-00003-of-00008` → (3, 8).
fn shard(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("variables.data-")?;
    let (i, of) = rest.split_once("-of-")?;
    let (i, of): (u32, u32) = (i.parse().ok()?, of.parse().ok()?);
    (i < of).then_some((i, of))
}

/// Whether a fetched `saved_model.pb` restores variables from a checkpoint (a meta graph
/// with a `saver_def`, what TensorFlow 1 and 2 both write when there are variables).
pub fn expects_variables(saved_model_pb: &[u8]) -> Result<bool, String> {
    use prost::Message;
    let m = tfgate_proto::tensorflow::SavedModel::decode(saved_model_pb)
        .map_err(|e| format!("saved_model.pb does not parse: {e}"))?;
    Ok(m.meta_graphs.iter().any(|g| {
        g.saver_def
            .as_ref()
            .is_some_and(|s| !s.filename_tensor_name.is_empty())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::PutPayload;

    async fn put(store: &InMemory, key: &str, bytes: &'static [u8]) {
        store
            .put(&Path::from(key), PutPayload::from_static(bytes))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn versions_are_numeric_children_markers_included() {
        let s = InMemory::new();
        put(&s, "m/1/saved_model.pb", b"x").await;
        put(&s, "m/12/variables/variables.index", b"x").await;
        put(&s, "m/7", b"").await; // a `m/7/` marker: an empty version directory
        put(&s, "m/notes.txt", b"x").await;
        put(&s, "m/tmp/x", b"x").await;
        put(&s, "m/-3/x", b"x").await;
        put(&s, "other/2/x", b"x").await;
        let v = list_versions(&s, &Path::from("m")).await.unwrap();
        assert_eq!(v.into_iter().collect::<Vec<_>>(), vec![1, 7, 12]);
    }

    #[tokio::test]
    async fn markers_and_keys_that_are_file_and_prefix_become_directories() {
        let s = InMemory::new();
        put(&s, "m/1", b"").await;
        put(&s, "m/1/variables", b"").await;
        put(&s, "m/1/variables/variables.index", b"idx").await;
        put(&s, "m/1/saved_model.pb", b"pb").await;
        put(&s, "m/1/assets/vocab.txt", b"a\nb\n").await;
        let listing = list_version(&s, &Path::from("m/1")).await.unwrap();
        let files: Vec<_> = listing.files.iter().map(|f| f.relative.clone()).collect();
        assert_eq!(
            files,
            vec![
                PathBuf::from("assets/vocab.txt"),
                PathBuf::from("saved_model.pb"),
                PathBuf::from("variables/variables.index")
            ]
        );
        assert_eq!(listing.bytes(), 3 + 2 + 4);
        let dir = std::env::temp_dir().join(format!("tfgate-fetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        download(&s, &listing, &dir).await.unwrap();
        assert_eq!(
            std::fs::read(dir.join("variables/variables.index")).unwrap(),
            b"idx"
        );
        assert_eq!(
            std::fs::read(dir.join("assets/vocab.txt")).unwrap(),
            b"a\nb\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_empty_file_stays_a_file() {
        // (A marker's key keeps its slash in S3 and GCS, so HEAD on the listed name
        // misses it; InMemory has no such keys: tests/python/test_model_store.py has the
        // marker case against real servers.)
        let s = InMemory::new();
        put(&s, "m/1/saved_model.pb", b"pb").await;
        put(&s, "m/1/assets/", b"").await;
        put(&s, "m/1/empty.txt", b"").await;
        let listing = list_version(&s, &Path::from("m/1")).await.unwrap();
        let dir = std::env::temp_dir().join(format!("tfgate-marker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        download(&s, &listing, &dir).await.unwrap();
        assert!(dir.join("empty.txt").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn listing_of(names: &[&str]) -> Listing {
        Listing {
            files: names
                .iter()
                .map(|n| File {
                    object: Path::from(*n),
                    relative: PathBuf::from(n),
                    size: 1,
                })
                .collect(),
            dirs: BTreeSet::new(),
        }
    }

    #[test]
    fn a_version_is_whole_with_its_graph_index_and_every_shard() {
        let whole = [
            "saved_model.pb",
            "variables/variables.index",
            "variables/variables.data-00000-of-00002",
            "variables/variables.data-00001-of-00002",
        ];
        assert_eq!(incomplete(&listing_of(&whole)), None);
        assert_eq!(
            incomplete(&listing_of(&whole[1..])).as_deref(),
            Some("no saved_model.pb yet")
        );
        assert_eq!(
            incomplete(&listing_of(&whole[..3])).as_deref(),
            Some("1 of the 2 variables data shards there")
        );
        assert_eq!(
            incomplete(&listing_of(&[whole[0], whole[2], whole[3]])).as_deref(),
            Some("variables/variables.index not there yet")
        );
        assert_eq!(
            incomplete(&listing_of(&whole[..2])).as_deref(),
            Some("no variables/variables.data-* shard yet")
        );
        // A graph with no checkpoint listed: whole as far as the listing tells.
        assert_eq!(incomplete(&listing_of(&["saved_model.pbtxt"])), None);
    }

    #[test]
    fn a_graph_with_a_saver_expects_variables() {
        use prost::Message;
        use tfgate_proto::tensorflow::{MetaGraphDef, SavedModel, SaverDef};
        let with = SavedModel {
            meta_graphs: vec![MetaGraphDef {
                saver_def: Some(SaverDef {
                    filename_tensor_name: "save/Const:0".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(expects_variables(&with.encode_to_vec()).unwrap());
        let without = SavedModel {
            meta_graphs: vec![MetaGraphDef::default()],
            ..Default::default()
        };
        assert!(!expects_variables(&without.encode_to_vec()).unwrap());
        assert!(expects_variables(b"\xff\xff").is_err());
    }

    #[tokio::test]
    async fn a_file_with_content_that_is_also_a_prefix_is_refused() {
        let s = InMemory::new();
        put(&s, "m/1/variables", b"data").await;
        put(&s, "m/1/variables/variables.index", b"idx").await;
        let e = list_version(&s, &Path::from("m/1")).await.unwrap_err();
        assert!(e.contains("both a file of 4 bytes and a directory"), "{e}");
    }

    #[tokio::test]
    async fn a_listed_size_the_body_does_not_match_is_a_cut_off() {
        let s = InMemory::new();
        put(&s, "m/1/saved_model.pb", b"pb").await;
        let mut listing = list_version(&s, &Path::from("m/1")).await.unwrap();
        listing.files[0].size = 10;
        let dir = std::env::temp_dir().join(format!("tfgate-cut-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let e = download(&s, &listing, &dir).await.unwrap_err();
        assert!(e.contains("cut off after 2 of 10 bytes"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
