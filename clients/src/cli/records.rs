//! Reading input files: JSONL, CSV, either optionally gzip-compressed (`.gz`).

use anyhow::{bail, Context, Result};
use flate2::read::MultiGzDecoder;
use serde_json::{Map, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// The layout of an input file, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`.jsonl`, `.json`, `.ndjson` and anything not `.csv`).
    Jsonl,
    /// Comma-separated values with a header row (`.csv`).
    Csv,
}

impl Format {
    /// The format of `path`, looking through a trailing `.gz`.
    pub fn of(path: &Path) -> Self {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".csv") {
            Format::Csv
        } else {
            Format::Jsonl
        }
    }
}

/// One input record: its 1-based line number and its fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Line number in the (decompressed) file.
    pub line: u64,
    /// Field values; for CSV all strings, empty cells left out.
    pub fields: Map<String, Value>,
}

/// Opens `path` for reading, decompressing it when its name ends in `.gz`.
pub fn open(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    Ok(if gz {
        Box::new(BufReader::new(MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// Reads every record of `path` (JSONL or CSV by its extension).
pub fn read_file(path: &Path) -> Result<(Format, Vec<Record>)> {
    let format = Format::of(path);
    let reader = open(path)?;
    let records = match format {
        Format::Jsonl => read_jsonl(reader),
        Format::Csv => read_csv(reader),
    }
    .with_context(|| format!("reading {}", path.display()))?;
    Ok((format, records))
}

/// Reads JSON objects, one per line; blank lines are skipped.
pub fn read_jsonl(reader: impl BufRead) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = line.with_context(|| format!("line {line_no}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let fields = match serde_json::from_str::<Value>(&line)
            .with_context(|| format!("line {line_no}: invalid JSON"))?
        {
            Value::Object(fields) => fields,
            _ => bail!("line {line_no}: not a JSON object"),
        };
        records.push(Record {
            line: line_no,
            fields,
        });
    }
    Ok(records)
}

/// Reads CSV with a header row naming the fields; every value is a string and empty cells
/// are left out.
pub fn read_csv(reader: impl Read) -> Result<Vec<Record>> {
    let mut csv = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(reader);
    let headers: Vec<String> = csv
        .headers()
        .context("reading the CSV header")?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut records = Vec::new();
    for row in csv.records() {
        let row = row.context("invalid CSV")?;
        let line = row.position().map_or(0, |p| p.line());
        let mut fields = Map::new();
        for (name, cell) in headers.iter().zip(row.iter()) {
            if !cell.is_empty() {
                fields.insert(name.clone(), Value::String(cell.to_string()));
            }
        }
        records.push(Record { line, fields });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    #[test]
    fn format_by_extension() {
        assert_eq!(Format::of(Path::new("m.jsonl")), Format::Jsonl);
        assert_eq!(Format::of(Path::new("m.jsonl.gz")), Format::Jsonl);
        assert_eq!(Format::of(Path::new("m.CSV")), Format::Csv);
        assert_eq!(Format::of(Path::new("dir.csv/m.csv.gz")), Format::Csv);
        assert_eq!(Format::of(Path::new("m.json")), Format::Jsonl);
    }

    #[test]
    fn jsonl_lines_and_errors() {
        let text = "{\"a\": 1}\n\n{\"a\": 2}\n";
        let records = read_jsonl(text.as_bytes()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].line, 3);
        assert_eq!(records[1].fields["a"], json!(2));
        let err = read_jsonl("{\"a\": 1}\n[1]\n".as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        let err = read_jsonl("{\"a\": 1}\n{oops\n".as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }

    #[test]
    fn csv_rows_are_strings_without_empty_cells() {
        let text = "id,title,year\ntt1,\"Heat, the film\",1995\ntt2,,\n";
        let records = read_csv(text.as_bytes()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].line, 2);
        assert_eq!(records[0].fields["title"], json!("Heat, the film"));
        assert_eq!(records[0].fields["year"], json!("1995"));
        assert_eq!(records[1].fields.len(), 1);
    }

    #[test]
    fn gzip_files_decompress() {
        let dir = std::env::temp_dir().join(format!("marquee-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(b"{\"imdb_id\": \"tt1\"}\n").unwrap();
        gz.finish().unwrap();
        let (format, records) = read_file(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(format, Format::Jsonl);
        assert_eq!(records[0].fields["imdb_id"], json!("tt1"));
    }
}
