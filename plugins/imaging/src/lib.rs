//! Image operations shared by Marquee's vision plugins, reproduced to the bit from the
//! libraries their reference models were trained with: decoding untrusted bytes
//! ([`decode`]) and resampling ([`resample`]).

pub mod decode;
pub mod resample;

pub use decode::{decode_rgb, DecodeError};
pub use resample::{resize_rgb, resize_rgb_window, Filter, Window};
