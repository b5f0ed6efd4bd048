//! Benchmark inputs read from files: texts (movie documents, tip-of-the-tongue queries
//! or plain lines) and user ids (a ratings CSV).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// The document text of one movie: `"{title} ({year}). {overview or plot}"`.
pub fn doc_text(movie: &Value) -> String {
    let title = movie["title"].as_str().unwrap_or("");
    let body = [&movie["overview"], &movie["plot"]]
        .into_iter()
        .filter_map(|v| v.as_str())
        .find(|s| !s.is_empty())
        .unwrap_or("");
    match &movie["year"] {
        Value::Null => format!("{title}. {body}"),
        year => format!("{title} ({}). {body}", year.to_string().trim_matches('"')),
    }
}

/// The text of one JSON record: a JSON string itself, a `query` (tip-of-the-tongue
/// files), a `text`, or a movie's document text when it has a `title`.
fn record_text(record: &Value) -> Option<String> {
    if let Some(s) = record.as_str() {
        return Some(s.to_string());
    }
    for key in ["query", "text"] {
        if let Some(s) = record[key].as_str() {
            return Some(s.to_string());
        }
    }
    record["title"].is_string().then(|| doc_text(record))
}

/// A reader over a file, gunzipped when its name ends in `.gz`.
fn open(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::new(reader)))
}

/// The first `limit` texts of a file (all with `None`), skipping blank lines.
/// `.jsonl`/`.json` files (optionally `.gz`) hold one JSON record per line (see
/// [`record_text`]); any other file holds one text per line.
pub fn read_texts(path: &Path, limit: Option<usize>) -> Result<Vec<String>> {
    let name = path.to_string_lossy();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let json = name.ends_with(".jsonl") || name.ends_with(".json");
    let mut texts = Vec::new();
    for (i, line) in open(path)?.lines().enumerate() {
        if limit.is_some_and(|n| texts.len() >= n) {
            break;
        }
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        if !json {
            texts.push(line);
            continue;
        }
        let record: Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        match record_text(&record) {
            Some(text) if !text.is_empty() => texts.push(text),
            _ => bail!(
                "{} line {}: no text (expected a string, or a `query`, `text` or `title` field)",
                path.display(),
                i + 1
            ),
        }
    }
    if texts.is_empty() {
        bail!("{} holds no texts", path.display());
    }
    Ok(texts)
}

/// The distinct user ids of a ratings CSV with a header row, in order of first
/// appearance: the `user_id` column, or the first column when there is none.
pub fn read_users(path: &Path) -> Result<Vec<String>> {
    let mut reader = csv::Reader::from_reader(open(path)?);
    let column = reader
        .headers()
        .with_context(|| format!("reading the header of {}", path.display()))?
        .iter()
        .position(|h| h.trim() == "user_id")
        .unwrap_or(0);
    let mut seen = HashSet::new();
    let mut users = Vec::new();
    for row in reader.records() {
        let row = row.with_context(|| format!("reading {}", path.display()))?;
        let id = row.get(column).unwrap_or("").trim();
        if !id.is_empty() && seen.insert(id.to_string()) {
            users.push(id.to_string());
        }
    }
    if users.is_empty() {
        bail!("{} holds no user ids", path.display());
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn movie_documents_from_gzipped_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("movies.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        writeln!(
            gz,
            r#"{{"imdb_id":"tt1","title":"Heat","year":1995,"overview":"Cops."}}"#
        )
        .unwrap();
        writeln!(gz).unwrap();
        writeln!(
            gz,
            r#"{{"imdb_id":"tt2","title":"Up","overview":"","plot":"A house."}}"#
        )
        .unwrap();
        writeln!(gz, r#"{{"imdb_id":"tt3","title":"M","year":"1931"}}"#).unwrap();
        gz.finish().unwrap();
        assert_eq!(
            read_texts(&path, None).unwrap(),
            ["Heat (1995). Cops.", "Up. A house.", "M (1931). "]
        );
        assert_eq!(read_texts(&path, Some(1)).unwrap(), ["Heat (1995). Cops."]);
    }

    #[test]
    fn queries_strings_and_plain_lines() {
        let dir = tempfile::tempdir().unwrap();
        let tot = dir.path().join("tot.jsonl");
        std::fs::write(
            &tot,
            "{\"query_id\":\"q1\",\"query\":\"a film\\nwith a boat\",\"relevant\":[\"tt1\"]}\n\"just text\"\n",
        )
        .unwrap();
        assert_eq!(
            read_texts(&tot, None).unwrap(),
            ["a film\nwith a boat", "just text"]
        );
        let txt = dir.path().join("texts.txt");
        std::fs::write(&txt, "one\n\n{not json}\n").unwrap();
        assert_eq!(read_texts(&txt, None).unwrap(), ["one", "{not json}"]);
    }

    #[test]
    fn records_without_text_and_empty_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"id\":1}\n").unwrap();
        let err = read_texts(&bad, None).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "\n\n").unwrap();
        assert!(read_texts(&empty, None).is_err());
    }

    #[test]
    fn distinct_users_from_a_ratings_csv() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ratings.csv");
        std::fs::write(
            &path,
            "item,user_id,rating\ntt1,7,5\ntt2,3,4\ntt3,7,1\ntt4,12,4\n",
        )
        .unwrap();
        assert_eq!(read_users(&path).unwrap(), ["7", "3", "12"]);
        let headerless_column = dir.path().join("u.csv");
        std::fs::write(&headerless_column, "uid,item\nu1,tt1\nu1,tt2\nu2,tt1\n").unwrap();
        assert_eq!(read_users(&headerless_column).unwrap(), ["u1", "u2"]);
    }
}
