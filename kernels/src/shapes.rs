//! The argument checks every backend runs before an op, so that all of them refuse the
//! same inputs with the same messages. Shapes are `(rows, cols)`.

use crate::{ImageShape, KernelError, Result, SeqOffsets, Window2d};

/// `Ok` when `cond` holds, else a shape error with the message `what` builds.
pub(crate) fn check(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(KernelError::Shape(what()))
    }
}

/// [`crate::Backend::upload`]: `len` values for a `rows × cols` matrix.
pub(crate) fn upload(len: usize, rows: usize, cols: usize) -> Result<()> {
    check(len == rows * cols, || {
        format!("{len} values for a {rows}x{cols} matrix")
    })
}

/// [`crate::Backend::embed_tokens`]: equally wide tables, ids inside them.
pub(crate) fn embedding(
    word: (usize, usize),
    position: (usize, usize),
    token_type_cols: usize,
    token_ids: &[u32],
    position_ids: &[u32],
) -> Result<()> {
    check(position.1 == word.1 && token_type_cols == word.1, || {
        "embedding tables differ in width".into()
    })?;
    check(token_ids.len() == position_ids.len(), || {
        "token and position ids differ in length".into()
    })?;
    if let Some(&bad) = token_ids.iter().find(|&&t| t as usize >= word.0) {
        return Err(KernelError::Shape(format!(
            "token id {bad} outside a vocabulary of {}",
            word.0
        )));
    }
    if let Some(&bad) = position_ids.iter().find(|&&p| p as usize >= position.0) {
        return Err(KernelError::Shape(format!(
            "position {bad} outside {} positions",
            position.0
        )));
    }
    Ok(())
}

/// [`crate::Backend::linear`]: the weight's input width, the bias's length.
pub(crate) fn linear(x_cols: usize, weight: (usize, usize), bias_len: Option<usize>) -> Result<()> {
    check(x_cols == weight.1, || {
        format!(
            "linear: input has {x_cols} columns, weight expects {}",
            weight.1
        )
    })?;
    check(bias_len.is_none_or(|b| b == weight.0), || {
        format!("linear: bias does not have {} values", weight.0)
    })
}

/// [`crate::Backend::add_layer_norm`]: the residual has the input's shape.
pub(crate) fn residual(x: (usize, usize), residual: (usize, usize)) -> Result<()> {
    check(x == residual, || "residual shape differs".into())
}

/// [`crate::Backend::attention`]: `3 × heads × head_dim` columns, offsets covering the
/// rows. Returns `(hidden, head_dim)`.
pub(crate) fn attention(
    qkv: (usize, usize),
    offsets: &SeqOffsets,
    heads: usize,
) -> Result<(usize, usize)> {
    check(
        qkv.1.is_multiple_of(3) && heads > 0 && (qkv.1 / 3).is_multiple_of(heads),
        || format!("attention: {} columns for {heads} heads", qkv.1),
    )?;
    check(offsets.last().copied().unwrap_or(0) == qkv.0, || {
        "attention: offsets do not cover the rows".into()
    })?;
    Ok((qkv.1 / 3, qkv.1 / 3 / heads))
}

/// [`crate::Backend::pool`]: offsets covering the rows, no empty sequence.
pub(crate) fn pooling(rows: usize, offsets: &SeqOffsets) -> Result<()> {
    check(offsets.last().copied().unwrap_or(0) == rows, || {
        "pool: offsets do not cover the rows".into()
    })?;
    check(offsets.windows(2).all(|w| w[1] > w[0]), || {
        "pool: empty sequence".into()
    })
}

/// [`crate::Backend::conv2d`]: input, weight, bias and residual against the window.
/// Returns the output shape.
pub(crate) fn conv2d(
    x: (usize, usize),
    shape: ImageShape,
    weight: (usize, usize),
    bias_len: Option<usize>,
    window: Window2d,
    residual: Option<(usize, usize)>,
) -> Result<ImageShape> {
    let output = window.output_shape(shape)?;
    let c = x.1;
    check(x.0 == shape.pixels() && c > 0, || {
        format!(
            "conv2d: a {}x{} input for a batch of {} {}x{} images",
            x.0, x.1, shape.batch, shape.height, shape.width
        )
    })?;
    let k = window.kernel_height * window.kernel_width * c;
    let n = weight.1;
    check(weight.0 == k, || {
        format!(
            "conv2d: weight has {} rows, a {}x{} kernel over {c} channels needs {k}",
            weight.0, window.kernel_height, window.kernel_width
        )
    })?;
    check(bias_len.is_none_or(|b| b == n), || {
        format!("conv2d: bias does not have {n} values")
    })?;
    let m = output.pixels();
    check(residual.is_none_or(|r| r == (m, n)), || {
        format!("conv2d: residual is not {m}x{n}")
    })?;
    Ok(output)
}

/// [`crate::Backend::max_pool2d`]: the input's rows and the padding. Returns the output
/// shape.
pub(crate) fn max_pool2d(rows: usize, shape: ImageShape, window: Window2d) -> Result<ImageShape> {
    let output = window.output_shape(shape)?;
    check(rows == shape.pixels(), || {
        format!(
            "max_pool2d: {rows} rows for a batch of {} {}x{} images",
            shape.batch, shape.height, shape.width
        )
    })?;
    check(
        window.padding * 2 < window.kernel_height.min(window.kernel_width) + 1,
        || "max_pool2d: padding must be at most half the window".into(),
    )?;
    Ok(output)
}
