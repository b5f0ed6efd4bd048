//! Image operations shared by Marquee's vision plugins, reproduced to the bit from the
//! libraries their reference models were trained with.

pub mod resample;

pub use resample::{resize_rgb, resize_rgb_window, Filter, Window};
