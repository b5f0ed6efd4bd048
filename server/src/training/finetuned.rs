//! The fine-tuned models under `data_dir/finetuned/`: each a sentence-transformers
//! directory plus [`RECORD`] (what it was trained from, with which settings, and how well
//! it did). A job writes into a hidden staging directory, syncs it and renames it into
//! place, so a crash leaves either no model or the whole one; staging leftovers are
//! removed at start-up, when every finished model is served again.

use std::io;
use std::path::{Path, PathBuf};

/// The folder of the data directory holding fine-tuned models.
pub const FOLDER: &str = "finetuned";

/// The file a finished fine-tuned model holds besides the model's own files.
pub const RECORD: &str = "marquee_finetune.json";

/// Where the model `name` is published.
pub fn model_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(FOLDER).join(name)
}

/// Where a job writing `name` stages it.
pub fn staging_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(FOLDER).join(format!(".{name}.partial"))
}

/// Where a job writing `name` keeps the weights it embeds with between epochs.
pub fn scratch_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(FOLDER).join(format!(".{name}.scratch"))
}

/// Syncs every file under `dir` and the directories themselves.
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Makes a staged model durable and renames it to its published place; refuses a name
/// that is already published.
pub fn publish(data_dir: &Path, name: &str) -> io::Result<PathBuf> {
    let staged = staging_dir(data_dir, name);
    let target = model_dir(data_dir, name);
    if target.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", target.display()),
        ));
    }
    sync_tree(&staged)?;
    std::fs::rename(&staged, &target)?;
    std::fs::File::open(data_dir.join(FOLDER))?.sync_all()?;
    Ok(target)
}

/// Removes staging leftovers of interrupted jobs and lists the published models (name,
/// directory), by name.
pub fn recover(data_dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let folder = data_dir.join(FOLDER);
    if !folder.is_dir() {
        return Ok(Vec::new());
    }
    let mut models = Vec::new();
    for entry in std::fs::read_dir(&folder)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            tracing::warn!(path = %entry.path().display(), "removing an interrupted fine-tuning job's files");
            std::fs::remove_dir_all(entry.path())?;
        } else if entry.path().join(RECORD).is_file() {
            models.push((name, entry.path()));
        }
    }
    models.sort();
    Ok(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_renames_a_synced_staging_dir_and_recover_cleans_leftovers() {
        let data = tempfile::tempdir().unwrap();
        let staged = staging_dir(data.path(), "tuned");
        std::fs::create_dir_all(staged.join("2_Dense")).unwrap();
        std::fs::write(staged.join(RECORD), "{}").unwrap();
        std::fs::write(staged.join("2_Dense/config.json"), "{}").unwrap();
        let published = publish(data.path(), "tuned").unwrap();
        assert_eq!(published, model_dir(data.path(), "tuned"));
        assert!(published.join("2_Dense/config.json").is_file() && !staged.exists());
        assert!(
            publish(data.path(), "tuned").is_err(),
            "a published name is refused"
        );

        std::fs::create_dir_all(staging_dir(data.path(), "half")).unwrap();
        std::fs::create_dir_all(model_dir(data.path(), "no-record")).unwrap();
        let found = recover(data.path()).unwrap();
        assert_eq!(found, vec![("tuned".to_string(), published)]);
        assert!(!staging_dir(data.path(), "half").exists());
    }
}
