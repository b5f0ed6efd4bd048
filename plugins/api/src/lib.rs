//! Marquee's plugin interface.
//!
//! - [`abi`]: the versioned C ABI (mirrored by `include/marquee_plugin.h`), with its
//!   compatibility rule.
//! - [`sdk`]: what a Rust plugin author writes against: the [`Plugin`] trait and the
//!   [`export_plugin!`] macro, which together keep every panic on the plugin's side, and
//!   [`parse_options`] for a plugin's JSON options.
//! - [`host`] (feature `host`): loading plugins with `libloading` and calling them safely.
//! - [`weights`] (feature `weights`): checkpoint tensors as f32.

pub mod abi;
#[cfg(feature = "host")]
pub mod host;
pub mod sdk;
mod types;
#[cfg(feature = "weights")]
pub mod weights;

pub use sdk::{parse_options, Plugin, PluginError, Tensor, TensorMut, Tokens};
pub use types::{
    tensor_names, AdapterInfo, DType, Finish, GeneratedToken, GeneratorState, ModelInfo,
    PluginKind, SamplingParams, SequenceStart, SequenceStarted, Status, StepOutput, TensorSpec,
};
