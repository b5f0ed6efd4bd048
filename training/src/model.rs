//! A sentence-transformers directory (BERT + pooling + optional Dense + optional
//! Normalize) loaded as trainable candle variables, and written back in the same layout.

use crate::bert::{Bert, Dropout, Linear, ParamSource};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarMap;
use marquee_bert_config::{read_json, BertConfig, ModuleEntry, Pipeline};
use marquee_kernels::{Activation, Pooling};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Weight files that [`SentenceEncoder::save`] writes itself (and never copies).
const WEIGHT_FILES: &[&str] = &[
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
];

/// A tensor of the checkpoint that is not trained (e.g. an integer `position_ids`
/// buffer), written back byte for byte.
struct RawTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// One safetensors file's tensors: float ones as variables (in file order), others raw.
struct LoadedFile {
    /// VarMap keys of the float tensors, with the name each has in the file.
    names: Vec<(String, String)>,
    raw: Vec<(String, RawTensor)>,
}

fn load_file(
    path: &Path,
    key_prefix: &str,
    varmap: &VarMap,
    device: &Device,
) -> Result<LoadedFile> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    // Keep the file's order (by data offset) so that saving reproduces it.
    let mut entries: Vec<(String, TensorView)> = st.tensors().into_iter().collect::<Vec<_>>();
    entries.sort_by_key(|(_, v)| v.data().as_ptr() as usize);
    let mut loaded = LoadedFile {
        names: Vec::new(),
        raw: Vec::new(),
    };
    let mut vars = varmap.data().lock().unwrap();
    for (name, view) in entries {
        let values: Option<Vec<f32>> = match view.dtype() {
            Dtype::F32 => Some(
                view.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::F64 => Some(
                view.data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
            ),
            Dtype::F16 => Some(
                view.data()
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            Dtype::BF16 => Some(
                view.data()
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            _ => None,
        };
        match values {
            Some(values) => {
                let key = format!("{key_prefix}{name}");
                let tensor = Tensor::from_vec(values, view.shape(), device)?;
                vars.insert(key.clone(), Var::from_tensor(&tensor)?);
                loaded.names.push((key, name));
            }
            None => loaded.raw.push((
                name,
                RawTensor {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    data: view.data().to_vec(),
                },
            )),
        }
    }
    Ok(loaded)
}

/// Looks names up in a [`VarMap`] under a prefix.
struct VarSource<'a> {
    varmap: &'a VarMap,
    prefix: String,
}

impl ParamSource for VarSource<'_> {
    fn param(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let key = format!("{}{name}", self.prefix);
        let vars = self.varmap.data().lock().unwrap();
        let var = vars
            .get(&key)
            .with_context(|| format!("tensor {key} not found in the checkpoint"))?;
        if var.dims() != shape {
            bail!(
                "tensor {key} has shape {:?}, expected {shape:?}",
                var.dims()
            );
        }
        Ok(var.as_tensor().clone())
    }
}

struct Dense {
    folder: String,
    linear: Linear,
    activation: Activation,
    file: LoadedFile,
    /// `config.json` to write for a module added by [`SentenceEncoder::add_projection`]
    /// (loaded modules keep their own file).
    new_config: Option<serde_json::Value>,
}

/// A sentence-transformers BERT model whose weights are all trainable variables.
pub struct SentenceEncoder {
    varmap: VarMap,
    source: PathBuf,
    bert: Bert,
    transformer_file: LoadedFile,
    pooling: Pooling,
    dense: Vec<Dense>,
    normalize: bool,
}

impl SentenceEncoder {
    /// Loads `dir` (`config.json`, `model.safetensors`, and when `modules.json` is present
    /// its Pooling, Dense and Normalize modules) onto `device`, every float tensor in f32.
    /// A directory without `modules.json` gets mean pooling, as sentence-transformers does.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config: BertConfig = read_json(&dir.join("config.json"))?;
        let varmap = VarMap::new();
        let transformer_file = load_file(&dir.join("model.safetensors"), "", &varmap, device)?;
        let prefix = {
            let vars = varmap.data().lock().unwrap();
            if vars.contains_key("embeddings.word_embeddings.weight") {
                String::new()
            } else if vars.contains_key("bert.embeddings.word_embeddings.weight") {
                "bert.".to_string()
            } else {
                bail!(
                    "embeddings.word_embeddings.weight not found (with or without a bert. prefix)"
                );
            }
        };
        let bert = Bert::load(
            config,
            &VarSource {
                varmap: &varmap,
                prefix,
            },
        )?;
        let pipeline = Pipeline::load(dir)?;
        if !matches!(pipeline.pooling, Pooling::Mean | Pooling::Cls) {
            bail!(
                "{:?} pooling is not supported for training (supported: mean, cls)",
                pipeline.pooling
            );
        }
        let mut dense = Vec::with_capacity(pipeline.dense.len());
        for (folder, config) in &pipeline.dense {
            let activation = config.activation()?;
            if activation == Activation::Gelu {
                bail!("Dense modules with GELU are not supported for training (supported: Identity, Tanh)");
            }
            let relative = folder
                .strip_prefix(dir)
                .context("a Dense module outside the model directory")?
                .to_string_lossy()
                .into_owned();
            let key_prefix = format!("{relative}/");
            let file = load_file(
                &folder.join("model.safetensors"),
                &key_prefix,
                &varmap,
                device,
            )
            .context("Dense weights must be in model.safetensors")?;
            let linear = Linear::load(
                &VarSource {
                    varmap: &varmap,
                    prefix: key_prefix,
                },
                "linear",
                config.in_features,
                config.out_features,
                config.bias,
            )?;
            dense.push(Dense {
                folder: relative,
                linear,
                activation,
                file,
                new_config: None,
            });
        }
        Ok(Self {
            varmap,
            source: dir.to_path_buf(),
            bert,
            transformer_file,
            pooling: pipeline.pooling,
            dense,
            normalize: pipeline.normalize,
        })
    }

    /// All trainable variables, keyed by checkpoint name (Dense ones as
    /// `{folder}/linear.weight`).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The variables in a stable order (sorted by name).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let vars = self.varmap.data().lock().unwrap();
        let mut all: Vec<(String, Var)> =
            vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The directory the model was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The BERT encoder.
    pub fn bert(&self) -> &Bert {
        &self.bert
    }

    /// The pooling mode.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Overrides the pooling mode read from `1_Pooling/config.json` (not saved).
    pub fn set_pooling(&mut self, pooling: Pooling) {
        self.pooling = pooling;
    }

    /// Appends a trainable Dense projection to `out_features` (Identity activation,
    /// with bias) after the pooling and any Dense modules, before normalisation — the
    /// `Dense` module sentence-transformers adds for a projection, initialised as
    /// `torch.nn.Linear` (uniform in ±1/√in, weights and bias) from `seed`. Saved as a
    /// new `{n}_Dense` module folder.
    pub fn add_projection(&mut self, out_features: usize, seed: u64) -> Result<()> {
        if out_features == 0 {
            bail!("the projection width must be positive");
        }
        let in_features = match self.dense.last() {
            Some(d) => d.linear.out_features(),
            None => self.bert.config().hidden_size,
        };
        let folder = self.new_module_folder("Dense");
        let device = self
            .named_vars()
            .first()
            .map(|(_, v)| v.device().clone())
            .context("the encoder has no weights")?;
        let bound = 1.0 / (in_features as f32).sqrt();
        let mut rng = crate::rng::SplitMix64::new(seed);
        let mut uniform = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| (2.0 * rng.next_f32() - 1.0) * bound)
                .collect()
        };
        let weight = Var::from_tensor(&Tensor::from_vec(
            uniform(out_features * in_features),
            (out_features, in_features),
            &device,
        )?)?;
        let bias = Var::from_tensor(&Tensor::from_vec(
            uniform(out_features),
            out_features,
            &device,
        )?)?;
        let mut names = Vec::new();
        {
            let mut vars = self.varmap.data().lock().unwrap();
            for (name, var) in [("linear.weight", weight), ("linear.bias", bias)] {
                let key = format!("{folder}/{name}");
                vars.insert(key.clone(), var);
                names.push((key, name.to_string()));
            }
        }
        let linear = Linear::load(
            &VarSource {
                varmap: &self.varmap,
                prefix: format!("{folder}/"),
            },
            "linear",
            in_features,
            out_features,
            true,
        )?;
        self.dense.push(Dense {
            folder,
            linear,
            activation: Activation::Identity,
            file: LoadedFile {
                names,
                raw: Vec::new(),
            },
            new_config: Some(serde_json::json!({
                "in_features": in_features,
                "out_features": out_features,
                "bias": true,
                "activation_function": "torch.nn.modules.linear.Identity",
            })),
        });
        Ok(())
    }

    /// The width of the sentence embeddings.
    pub fn output_dim(&self) -> usize {
        self.dense
            .last()
            .map_or(self.bert.config().hidden_size, |d| d.linear.out_features())
    }

    /// A module folder name `{n}_{kind}` that neither the source directory nor an added
    /// module uses, `n` from the module's place after Transformer, Pooling and the Dense
    /// modules before it.
    fn new_module_folder(&self, kind: &str) -> String {
        (2 + self.dense.len()..)
            .map(|n| format!("{n}_{kind}"))
            .find(|f| !self.source.join(f).exists() && self.dense.iter().all(|d| &d.folder != f))
            .expect("some folder name is free")
    }

    /// Sentence embeddings `(batch, out)` for padded `input_ids` and `attention_mask`
    /// `(batch, len)`: BERT, pooling, Dense modules, and L2 normalisation when the
    /// directory has a Normalize module — what `SentenceTransformer.forward` returns as
    /// `sentence_embedding` in eval mode.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.forward_with(input_ids, attention_mask, None)
    }

    /// [`SentenceEncoder::forward`] in training mode: BERT's dropout from `dropout`
    /// (sentence-transformers' Pooling, Dense and Normalize have none).
    pub fn forward_train(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        dropout: &mut Dropout,
    ) -> Result<Tensor> {
        self.forward_with(input_ids, attention_mask, Some(dropout))
    }

    /// Eval mode without `dropout`, training mode with it.
    pub fn forward_with(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        dropout: Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let states = self
            .bert
            .forward_with(input_ids, attention_mask, None, dropout)?;
        let mut x = match self.pooling {
            Pooling::Cls => states.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Max => bail!("max pooling is not supported for training"),
            Pooling::Mean => {
                let mask = attention_mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let sum = states.broadcast_mul(&mask)?.sum(1)?;
                let count = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                sum.broadcast_div(&count)?
            }
        };
        for dense in &self.dense {
            x = dense.linear.forward(&x)?;
            if dense.activation == Activation::Tanh {
                x = x.tanh()?;
            }
        }
        if self.normalize {
            x = l2_normalize(&x)?;
        }
        Ok(x)
    }

    /// Writes the current weights to `out` as a sentence-transformers directory:
    /// every regular file of the source directory and of its module folders is copied
    /// (configs, tokenizer files), except the weight files, which are written anew
    /// (`model.safetensors`, `{dense}/model.safetensors`; trained tensors as f32, others
    /// byte for byte). Other folders of the source (e.g. `onnx/`) are not copied: they
    /// would hold the old weights.
    pub fn save(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        copy_files(&self.source, out)?;
        let modules_path = self.source.join("modules.json");
        if modules_path.is_file() {
            let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
            for module in modules.iter().filter(|m| !m.path.is_empty()) {
                let from = self.source.join(&module.path);
                if from.is_dir() {
                    let to = out.join(&module.path);
                    std::fs::create_dir_all(&to)?;
                    copy_files(&from, &to)?;
                }
            }
        }
        self.write_file(&self.transformer_file, &out.join("model.safetensors"))?;
        for dense in &self.dense {
            let folder = out.join(&dense.folder);
            if let Some(config) = &dense.new_config {
                std::fs::create_dir_all(&folder)?;
                std::fs::write(
                    folder.join("config.json"),
                    serde_json::to_string_pretty(config)?,
                )?;
            }
            self.write_file(&dense.file, &folder.join("model.safetensors"))?;
        }
        if self.dense.iter().any(|d| d.new_config.is_some()) {
            self.write_modules(out)?;
        }
        Ok(())
    }

    /// Writes `modules.json` with the added Dense modules after the last existing
    /// Pooling or Dense module (so before Normalize), entries renumbered.
    fn write_modules(&self, out: &Path) -> Result<()> {
        let modules_path = self.source.join("modules.json");
        if !modules_path.is_file() {
            bail!("a projection needs a sentence-transformers directory (modules.json)");
        }
        let mut modules: Vec<serde_json::Value> = read_json(&modules_path)?;
        let kind_of = |m: &serde_json::Value| {
            m["type"]
                .as_str()
                .and_then(|t| t.rsplit('.').next())
                .unwrap_or_default()
                .to_string()
        };
        let at = modules
            .iter()
            .rposition(|m| matches!(kind_of(m).as_str(), "Pooling" | "Dense"))
            .map_or(modules.len(), |i| i + 1);
        let added: Vec<serde_json::Value> = self
            .dense
            .iter()
            .filter(|d| d.new_config.is_some())
            .map(|d| {
                serde_json::json!({
                    "path": d.folder,
                    "type": "sentence_transformers.models.Dense",
                })
            })
            .collect();
        modules.splice(at..at, added);
        for (i, module) in modules.iter_mut().enumerate() {
            module["idx"] = i.into();
            module["name"] = i.to_string().into();
        }
        std::fs::write(
            out.join("modules.json"),
            serde_json::to_string_pretty(&modules)?,
        )?;
        Ok(())
    }

    fn write_file(&self, file: &LoadedFile, path: &Path) -> Result<()> {
        let vars = self.varmap.data().lock().unwrap();
        let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (key, name) in &file.names {
            let var = vars.get(key).context("variable vanished")?;
            let values: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            owned.push((name.clone(), Dtype::F32, var.dims().to_vec(), bytes));
        }
        for (name, raw) in &file.raw {
            owned.push((name.clone(), raw.dtype, raw.shape.clone(), raw.data.clone()));
        }
        let views: Vec<(String, TensorView)> = owned
            .iter()
            .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
            .collect::<Result<_>>()?;
        let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        safetensors::serialize_to_file(views, Some(metadata), path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

fn copy_files(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if !entry.file_type()?.is_file() || WEIGHT_FILES.contains(&name.to_string_lossy().as_ref())
        {
            continue;
        }
        std::fs::copy(entry.path(), to.join(&name))
            .with_context(|| format!("copying {}", entry.path().display()))?;
    }
    Ok(())
}

/// `torch.nn.functional.normalize(x, p=2, dim=-1)`: `x / max(‖x‖, 1e-12)` per row.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}
