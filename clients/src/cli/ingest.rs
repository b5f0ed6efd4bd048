//! `marquee ingest`: turns JSONL / CSV records into items (texts, vectors, images, or
//! texts with images for pipelines) and upserts them over one client-streaming
//! `Upsert` call.

use super::progress;
use super::records::{self, Format, Record};
use super::template::Template;
use super::value;
use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use marquee_client::proto::{item::Content, Item, MultimodalInput, UpsertRequest, Vector};
use marquee_client::ConnectOptions;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `marquee ingest`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("content").required(true).multiple(true).args(["template", "vector_field", "image_template"])))]
pub struct IngestArgs {
    /// Collection name.
    pub collection: String,
    /// Input file: JSONL, JSONL.gz, or CSV (.csv, header row naming the fields).
    pub file: PathBuf,
    /// Field holding each record's id (numbers are stringified).
    #[arg(long, value_name = "FIELD")]
    pub id_field: String,
    /// Text to embed with the collection's model: literal text with {field} placeholders;
    /// {a|b} takes the first non-empty of the fields, e.g. '{title} ({year}). {overview|plot}'.
    #[arg(long)]
    pub template: Option<String>,
    /// Field holding a ready-made vector (a JSON array of numbers) instead of a text.
    #[arg(long, value_name = "FIELD")]
    pub vector_field: Option<String>,
    /// Path of each record's image (the poster), relative to FILE's directory, with
    /// {field} placeholders, e.g. 'posters/{imdb_id}.jpg'. Alone: the image is the
    /// item (image-encoder collections; records without an image file are skipped).
    /// With --template: the text and its images go together (pipeline collections;
    /// a record whose image file is missing is sent without it).
    #[arg(long, value_name = "TEMPLATE")]
    pub image_template: Option<String>,
    /// Path of each record's trailer thumbnail, as --image-template (with --template).
    #[arg(long, value_name = "TEMPLATE", requires = "template")]
    pub thumbnail_template: Option<String>,
    /// Comma-separated fields to store as payload (e.g. title,year,genres).
    #[arg(long, value_delimiter = ',', value_name = "FIELDS")]
    pub payload: Vec<String>,
    /// Items per streamed message.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
}

/// What an item's content is made from.
#[derive(Debug)]
pub enum ContentSpec {
    /// A text rendered from the record.
    Template(Template),
    /// A vector read from this field.
    VectorField(String),
    /// An image read from the path this template renders.
    Image(ImagePaths),
    /// A text with images (for pipelines).
    Multimodal(Template, ImagePaths),
}

/// Where a record's images are: paths rendered from templates, relative to `base`.
#[derive(Debug)]
pub struct ImagePaths {
    /// The directory paths are relative to (the input file's).
    pub base: PathBuf,
    /// The poster's path.
    pub poster: Template,
    /// The thumbnail's path, if any.
    pub thumbnail: Option<Template>,
}

impl ImagePaths {
    /// Reads the image a template names for `record`; `None` when there is no such
    /// file (or the template renders an empty path).
    fn read(&self, template: &Template, record: &Record) -> Result<Option<Vec<u8>>> {
        let relative = template.render(&record.fields);
        if relative.trim().is_empty() {
            return Ok(None);
        }
        let path = self.base.join(relative);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("line {}: reading {}", record.line, path.display()))
            }
        }
    }
}

/// A record turned into an item, or skipped.
#[derive(Debug, PartialEq)]
pub enum Built {
    /// The item, and how many of its image files were missing (sent without them).
    Item(Item, u32),
    /// An image-only record without its image file.
    Skipped,
}

/// How records become items.
#[derive(Debug)]
pub struct ItemSpec {
    /// The id field.
    pub id_field: String,
    /// The content.
    pub content: ContentSpec,
    /// Payload fields.
    pub payload: Vec<String>,
}

impl ItemSpec {
    /// Builds the spec from the command's arguments.
    pub fn from_args(args: &IngestArgs) -> Result<Self> {
        let images = |poster: &str| -> Result<ImagePaths> {
            Ok(ImagePaths {
                base: args
                    .file
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                poster: Template::parse(poster)?,
                thumbnail: args
                    .thumbnail_template
                    .as_deref()
                    .map(Template::parse)
                    .transpose()?,
            })
        };
        let content = match (&args.template, &args.vector_field, &args.image_template) {
            (Some(template), None, None) => ContentSpec::Template(Template::parse(template)?),
            (None, Some(field), None) => ContentSpec::VectorField(field.clone()),
            (None, None, Some(image)) => ContentSpec::Image(images(image)?),
            (Some(template), None, Some(image)) => {
                ContentSpec::Multimodal(Template::parse(template)?, images(image)?)
            }
            _ => bail!(
                "give --template, --vector-field, --image-template, or --template with --image-template"
            ),
        };
        Ok(Self {
            id_field: args.id_field.clone(),
            content,
            payload: args
                .payload
                .iter()
                .map(|f| f.trim().to_string())
                .filter(|f| !f.is_empty())
                .collect(),
        })
    }

    /// Converts one record to an item (reading its image files, if any); errors name
    /// the record's line.
    pub fn item(&self, record: &Record, format: Format) -> Result<Built> {
        let line = record.line;
        let id = match record.fields.get(&self.id_field) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            None | Some(serde_json::Value::Null) => {
                bail!("line {line}: no id field {:?}", self.id_field)
            }
            Some(serde_json::Value::String(_)) => {
                bail!("line {line}: empty id field {:?}", self.id_field)
            }
            Some(other) => bail!(
                "line {line}: id field {:?} is not a string or number: {other}",
                self.id_field
            ),
        };
        let text = |template: &Template| {
            let text = template.render(&record.fields);
            if text.trim().is_empty() {
                bail!("line {line}: the template renders an empty text");
            }
            Ok(text)
        };
        let mut missing = 0;
        let content = match &self.content {
            ContentSpec::Template(template) => Content::Text(text(template)?),
            ContentSpec::Image(paths) => match paths.read(&paths.poster, record)? {
                Some(bytes) => Content::Image(bytes),
                None => return Ok(Built::Skipped),
            },
            ContentSpec::Multimodal(template, paths) => {
                let mut read = |template: Option<&Template>| -> Result<Vec<u8>> {
                    let Some(template) = template else {
                        return Ok(Vec::new());
                    };
                    let bytes = paths.read(template, record)?;
                    missing += u32::from(bytes.is_none());
                    Ok(bytes.unwrap_or_default())
                };
                Content::Multimodal(MultimodalInput {
                    text: text(template)?,
                    poster: read(Some(&paths.poster))?,
                    thumbnail: read(paths.thumbnail.as_ref())?,
                })
            }
            ContentSpec::VectorField(field) => Content::Vector(Vector {
                values: value::vector(record.fields.get(field))
                    .with_context(|| format!("line {line}: vector field {field:?}"))?,
            }),
        };
        let mut payload = std::collections::HashMap::new();
        for field in &self.payload {
            let converted = match record.fields.get(field) {
                None => None,
                Some(serde_json::Value::String(cell)) if format == Format::Csv => {
                    Some(value::from_csv_cell(cell))
                }
                Some(v) => value::from_json(v)
                    .with_context(|| format!("line {line}: payload field {field:?}"))?,
            };
            if let Some(v) = converted {
                payload.insert(field.clone(), v);
            }
        }
        Ok(Built::Item(
            Item {
                id,
                content: Some(content),
                payload,
            },
            missing,
        ))
    }
}

/// Splits items into `UpsertRequest`s of at most `batch` items, each naming the collection.
pub fn batches(collection: &str, items: Vec<Item>, batch: usize) -> Vec<UpsertRequest> {
    let mut messages = Vec::with_capacity(items.len().div_ceil(batch.max(1)));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        messages.push(UpsertRequest {
            collection: collection.to_string(),
            items: items.by_ref().take(batch.max(1)).collect(),
        });
    }
    messages
}

/// Runs `marquee ingest`.
pub async fn run(server: &ConnectOptions, args: IngestArgs, as_json: bool) -> Result<()> {
    let started = Instant::now();
    let spec = ItemSpec::from_args(&args)?;
    let (format, records) = records::read_file(&args.file)?;
    let (mut items, mut missing_images, mut skipped) = (Vec::new(), 0u64, 0u64);
    for record in &records {
        match spec
            .item(record, format)
            .with_context(|| format!("reading {}", args.file.display()))?
        {
            Built::Item(item, missing) => {
                items.push(item);
                missing_images += u64::from(missing);
            }
            Built::Skipped => skipped += 1,
        }
    }
    if items.is_empty() {
        bail!(
            "{}: no records to ingest ({skipped} skipped without an image)",
            args.file.display()
        );
    }
    let total = items.len() as u64;
    let messages = batches(&args.collection, items, args.batch as usize);
    let mut client = super::connect(server).await?;
    let bar = progress::bar(total, "items", as_json);
    let stream = progress::Sent::new(
        messages,
        bar.clone(),
        |m: &UpsertRequest| m.items.len() as u64,
        format!("{total} items sent; waiting for the server to store them"),
    );
    let response = client.retrieval.upsert(stream).await;
    bar.finish_and_clear();
    let upserted = response?.into_inner().upserted;
    let seconds = started.elapsed().as_secs_f64();
    let rate = upserted as f64 / seconds.max(1e-9);
    if as_json {
        println!(
            "{}",
            json!({ "items": upserted, "seconds": seconds, "items_per_s": rate,
                    "missing_images": missing_images, "skipped_without_image": skipped })
        );
    } else {
        println!("ingested {upserted} items in {seconds:.2} s ({rate:.1} items/s)");
        if missing_images > 0 {
            println!(
                "{missing_images} image files were missing; those items were sent without them"
            );
        }
        if skipped > 0 {
            println!("skipped {skipped} records without an image file");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use marquee_client::proto::value::Kind;
    use serde_json::json;

    fn record(line: u64, v: serde_json::Value) -> Record {
        Record {
            line,
            fields: v.as_object().unwrap().clone(),
        }
    }

    fn built(b: Built) -> Item {
        match b {
            Built::Item(item, _) => item,
            Built::Skipped => panic!("skipped"),
        }
    }

    #[test]
    fn images_are_read_relative_to_the_file_and_missing_ones_counted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("posters")).unwrap();
        std::fs::write(dir.path().join("posters/tt1.jpg"), b"poster one").unwrap();
        let paths = || ImagePaths {
            base: dir.path().to_path_buf(),
            poster: Template::parse("posters/{imdb_id}.jpg").unwrap(),
            thumbnail: None,
        };
        let image_only = ItemSpec {
            id_field: "imdb_id".into(),
            content: ContentSpec::Image(paths()),
            payload: vec![],
        };
        let (with, without) = (
            record(1, json!({"imdb_id": "tt1", "title": "A"})),
            record(2, json!({"imdb_id": "tt2", "title": "B"})),
        );
        let item = built(image_only.item(&with, Format::Jsonl).unwrap());
        assert_eq!(item.content, Some(Content::Image(b"poster one".to_vec())));
        assert_eq!(
            image_only.item(&without, Format::Jsonl).unwrap(),
            Built::Skipped
        );

        let fused = ItemSpec {
            id_field: "imdb_id".into(),
            content: ContentSpec::Multimodal(Template::parse("{title}").unwrap(), paths()),
            payload: vec![],
        };
        let Built::Item(item, 0) = fused.item(&with, Format::Jsonl).unwrap() else {
            panic!("no item");
        };
        assert_eq!(
            item.content,
            Some(Content::Multimodal(MultimodalInput {
                text: "A".into(),
                poster: b"poster one".to_vec(),
                thumbnail: vec![],
            }))
        );
        let Built::Item(item, 1) = fused.item(&without, Format::Jsonl).unwrap() else {
            panic!("the missing poster is not counted");
        };
        assert_eq!(
            item.content,
            Some(Content::Multimodal(MultimodalInput {
                text: "B".into(),
                ..Default::default()
            }))
        );
    }

    fn text_spec(payload: &[&str]) -> ItemSpec {
        ItemSpec {
            id_field: "imdb_id".into(),
            content: ContentSpec::Template(Template::parse("{title} ({year})").unwrap()),
            payload: payload.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn jsonl_record_to_item() {
        let spec = text_spec(&["title", "year", "genres", "rating", "missing", "nothing"]);
        let r = record(
            1,
            json!({"imdb_id": "tt1", "title": "Heat", "year": 1995, "genres": ["Crime"],
                   "rating": 8.3, "nothing": null}),
        );
        let item = built(spec.item(&r, Format::Jsonl).unwrap());
        assert_eq!(item.id, "tt1");
        assert_eq!(item.content, Some(Content::Text("Heat (1995)".into())));
        assert_eq!(item.payload.len(), 4);
        assert_eq!(item.payload["year"].kind, Some(Kind::IntValue(1995)));
        assert_eq!(item.payload["rating"].kind, Some(Kind::DoubleValue(8.3)));
    }

    #[test]
    fn csv_record_infers_payload_numbers() {
        let spec = text_spec(&["title", "year", "score"]);
        let r = record(
            2,
            json!({"imdb_id": "tt1", "title": "1917", "year": "2019", "score": "7.5"}),
        );
        let item = built(spec.item(&r, Format::Csv).unwrap());
        assert_eq!(item.payload["title"].kind, Some(Kind::IntValue(1917)));
        assert_eq!(item.payload["year"].kind, Some(Kind::IntValue(2019)));
        assert_eq!(item.payload["score"].kind, Some(Kind::DoubleValue(7.5)));
    }

    #[test]
    fn numeric_ids_are_stringified_and_missing_ids_name_the_line() {
        let spec = text_spec(&[]);
        let item = built(
            spec.item(
                &record(1, json!({"imdb_id": 42, "title": "T"})),
                Format::Jsonl,
            )
            .unwrap(),
        );
        assert_eq!(item.id, "42");
        let err = spec
            .item(&record(17, json!({"title": "T"})), Format::Jsonl)
            .unwrap_err();
        assert!(err.to_string().contains("line 17"), "{err}");
        assert!(err.to_string().contains("imdb_id"), "{err}");
        assert!(spec
            .item(&record(3, json!({"imdb_id": ["x"]})), Format::Jsonl)
            .is_err());
    }

    #[test]
    fn vectors_from_arrays_and_strings() {
        let spec = ItemSpec {
            id_field: "id".into(),
            content: ContentSpec::VectorField("v".into()),
            payload: vec![],
        };
        let item = built(
            spec.item(&record(1, json!({"id": "a", "v": [1, 0.5]})), Format::Jsonl)
                .unwrap(),
        );
        assert_eq!(
            item.content,
            Some(Content::Vector(Vector {
                values: vec![1.0, 0.5]
            }))
        );
        let item = built(
            spec.item(
                &record(2, json!({"id": "a", "v": "[0.25, 2]"})),
                Format::Csv,
            )
            .unwrap(),
        );
        assert_eq!(
            item.content,
            Some(Content::Vector(Vector {
                values: vec![0.25, 2.0]
            }))
        );
        for bad in [
            json!({"id": "a"}),
            json!({"id": "a", "v": [1, "x"]}),
            json!({"id": "a", "v": []}),
        ] {
            let err = spec.item(&record(9, bad), Format::Jsonl).unwrap_err();
            assert!(format!("{err:#}").contains("line 9"), "{err:#}");
        }
    }

    #[test]
    fn batching() {
        let items: Vec<Item> = (0..130)
            .map(|i| Item {
                id: i.to_string(),
                ..Default::default()
            })
            .collect();
        let messages = batches("movies", items, 64);
        let sizes: Vec<usize> = messages.iter().map(|m| m.items.len()).collect();
        assert_eq!(sizes, [64, 64, 2]);
        assert!(messages.iter().all(|m| m.collection == "movies"));
        assert_eq!(messages[2].items[1].id, "129");
    }
}
