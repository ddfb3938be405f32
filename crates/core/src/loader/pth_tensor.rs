//! One state-dict value, as decoded by candle's pickle reader, read as a view into a storage.
//!
//! `torch.save` writes a tensor as `_rebuild_tensor_v2(storage, storage_offset, size, stride, …)`
//! (possibly wrapped in `_rebuild_parameter` or `_rebuild_from_type_v2`); the storage is a persistent id
//! `("storage", <dtype>Storage, key, location, numel)`. candle's `Object::into_tensor_info` does the same
//! reading but panics on short tuples, wraps negative or huge numbers into `usize`, and puts the offset
//! into its layout in bytes; this reading checks every field and keeps the offset in elements.

use candle_core::pickle::Object;

use super::WeightDType;

/// Where a tensor's elements are: `shape` elements, row-major, from element `offset` of a storage.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TensorView {
    pub storage: StorageId,
    /// Offset into the storage, in elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    /// Elements in the view (the product of `shape`, checked).
    pub numel: usize,
}

/// A storage as the pickle names it: its key (`data/<key>` in the zip), dtype and length in elements.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StorageId {
    pub key: String,
    pub dtype: WeightDType,
    pub numel: usize,
}

type Found<T> = std::result::Result<T, String>;

/// The view `value` describes, `Ok(None)` when it is not a tensor (metadata, numbers), or what is wrong.
/// Problems never quote the pickle's contents beyond names from a fixed list.
pub(super) fn tensor_view(value: &Object) -> Found<Option<TensorView>> {
    let Object::Reduce { callable, args } = value else { return Ok(None) };
    let (mut callable, mut args) = (callable.as_ref(), args.as_ref());
    // At most one `_rebuild_parameter` and one `_rebuild_from_type_v2` around the tensor.
    for _ in 0..2 {
        match torch_function(callable) {
            Some(("torch._utils", "_rebuild_parameter")) => {
                // (tensor, requires_grad, backward_hooks)
                match tuple(args, "_rebuild_parameter arguments")?.first() {
                    Some(Object::Reduce { callable: c, args: a }) => (callable, args) = (c, a),
                    _ => return Err("_rebuild_parameter does not wrap a tensor".to_string()),
                }
            }
            Some(("torch._tensor", "_rebuild_from_type_v2")) => {
                // (function, type, args, state)
                match tuple(args, "_rebuild_from_type_v2 arguments")? {
                    [c, _, a, ..] => (callable, args) = (c, a),
                    _ => return Err("_rebuild_from_type_v2 has too few arguments".to_string()),
                }
            }
            _ => break,
        }
    }
    match torch_function(callable) {
        Some(("torch._utils", "_rebuild_tensor_v2")) => rebuild_tensor_v2(args).map(Some),
        Some((module, name)) if module.starts_with("torch") && name.starts_with("_rebuild") => {
            Err("is stored in an unsupported tensor encoding (only plain dense tensors are supported)".to_string())
        }
        _ => Ok(None),
    }
}

/// `(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`.
fn rebuild_tensor_v2(args: &Object) -> Found<TensorView> {
    let [storage, offset, size, stride, ..] = tuple(args, "_rebuild_tensor_v2 arguments")? else {
        return Err("_rebuild_tensor_v2 has too few arguments".to_string());
    };
    let storage = storage_id(storage)?;
    let offset = count(offset, "storage offset")?;
    let shape = counts(size, "size")?;
    let stride = counts(stride, "stride")?;
    if stride.len() != shape.len() {
        return Err(format!("has {} strides for {} dimensions", stride.len(), shape.len()));
    }
    let numel =
        shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or("has a size whose element count overflows")?;
    if numel > 0 && !row_major(&shape, &stride) {
        return Err(format!(
            "is not stored contiguously (size {shape:?}, stride {stride:?}); save it with .contiguous()"
        ));
    }
    let end = offset.checked_add(numel).ok_or("has a storage offset that overflows")?;
    if end > storage.numel {
        return Err(format!("covers elements {offset}..{end} of a storage of {} elements", storage.numel));
    }
    Ok(TensorView { storage, offset, shape, numel })
}

/// Strides of a row-major (C-contiguous) layout; a dimension of size 1 may have any stride.
fn row_major(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&dim, &s) in shape.iter().zip(stride).rev() {
        if dim != 1 && s != expected {
            return false;
        }
        // Cannot overflow: the product of all dims was checked by the caller.
        expected *= dim;
    }
    true
}

/// `("storage", <dtype>Storage, key, location, numel)`.
fn storage_id(obj: &Object) -> Found<StorageId> {
    let Object::PersistentLoad(id) = obj else { return Err("has no storage reference".to_string()) };
    let [kind, class, key, _location, numel] = tuple(id, "storage reference")? else {
        return Err("has a malformed storage reference".to_string());
    };
    if !matches!(kind, Object::Unicode(k) if k == "storage") {
        return Err("has a malformed storage reference".to_string());
    }
    let Object::Class { class_name, .. } = class else { return Err("has a storage without a type".to_string()) };
    let dtype = storage_dtype(class_name)?;
    let Object::Unicode(key) = key else { return Err("has a storage without a name".to_string()) };
    let numel = count(numel, "storage size")?;
    Ok(StorageId { key: key.clone(), dtype, numel })
}

/// The dtype of a `torch.<X>Storage` class; unsupported ones named from a fixed list.
fn storage_dtype(class_name: &str) -> Found<WeightDType> {
    const UNSUPPORTED: [(&str, &str); 12] = [
        ("ByteStorage", "uint8"),
        ("CharStorage", "int8"),
        ("ShortStorage", "int16"),
        ("IntStorage", "int32"),
        ("LongStorage", "int64"),
        ("BoolStorage", "bool"),
        ("ComplexFloatStorage", "complex64"),
        ("ComplexDoubleStorage", "complex128"),
        ("QInt8Storage", "qint8"),
        ("QUInt8Storage", "quint8"),
        ("QInt32Storage", "qint32"),
        ("Float8_e4m3fnStorage", "float8_e4m3fn"),
    ];
    match class_name {
        "FloatStorage" => Ok(WeightDType::F32),
        "HalfStorage" => Ok(WeightDType::F16),
        "BFloat16Storage" => Ok(WeightDType::BF16),
        "DoubleStorage" => Ok(WeightDType::F64),
        other => Err(match UNSUPPORTED.iter().find(|(c, _)| *c == other) {
            Some((_, dtype)) => {
                format!("has unsupported dtype {dtype} (supported: float32, float16, bfloat16, float64)")
            }
            None => "has an unknown storage type".to_string(),
        }),
    }
}

/// `(module, name)` of a global.
fn torch_function(obj: &Object) -> Option<(&str, &str)> {
    match obj {
        Object::Class { module_name, class_name } => Some((module_name.as_str(), class_name.as_str())),
        _ => None,
    }
}

fn tuple<'a>(obj: &'a Object, what: &str) -> Found<&'a [Object]> {
    match obj {
        Object::Tuple(items) => Ok(items),
        _ => Err(format!("has {what} that are not a tuple")),
    }
}

/// A non-negative integer that fits `usize`.
fn count(obj: &Object, what: &str) -> Found<usize> {
    let v = match obj {
        Object::Int(v) => i64::from(*v),
        Object::Long(v) => *v,
        _ => return Err(format!("has a {what} that is not an integer")),
    };
    usize::try_from(v).map_err(|_| format!("has a {what} out of range ({v})"))
}

fn counts(obj: &Object, what: &str) -> Found<Vec<usize>> {
    match obj {
        Object::Tuple(items) => items.iter().map(|o| count(o, what)).collect(),
        _ => Err(format!("has a {what} that is not a tuple")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(m: &str, n: &str) -> Object {
        Object::Class { module_name: m.into(), class_name: n.into() }
    }

    fn rebuild(storage_class: &str, numel: i64, offset: i64, size: &[i32], stride: &[i32]) -> Object {
        let storage = Object::PersistentLoad(Box::new(Object::Tuple(vec![
            Object::Unicode("storage".into()),
            class("torch", storage_class),
            Object::Unicode("0".into()),
            Object::Unicode("cpu".into()),
            Object::Long(numel),
        ])));
        Object::Reduce {
            callable: Box::new(class("torch._utils", "_rebuild_tensor_v2")),
            args: Box::new(Object::Tuple(vec![
                storage,
                Object::Long(offset),
                Object::Tuple(size.iter().map(|&d| Object::Int(d)).collect()),
                Object::Tuple(stride.iter().map(|&d| Object::Int(d)).collect()),
                Object::Bool(false),
                Object::None,
            ])),
        }
    }

    #[test]
    fn reads_offset_in_elements() {
        let v = tensor_view(&rebuild("FloatStorage", 12, 6, &[2, 3], &[3, 1])).unwrap().unwrap();
        assert_eq!(
            (v.offset, v.shape.clone(), v.storage.numel, v.storage.dtype),
            (6, vec![2, 3], 12, WeightDType::F32)
        );
    }

    #[test]
    fn refuses_views_outside_storage_negative_and_huge_numbers() {
        assert!(tensor_view(&rebuild("FloatStorage", 12, 7, &[2, 3], &[3, 1])).unwrap_err().contains("7..13"));
        assert!(tensor_view(&rebuild("FloatStorage", 12, -1, &[2, 3], &[3, 1])).unwrap_err().contains("out of range"));
        assert!(tensor_view(&rebuild("FloatStorage", 12, 1 << 62, &[2, 3], &[3, 1])).is_err());
        assert!(tensor_view(&rebuild("FloatStorage", -4, 0, &[2], &[1])).unwrap_err().contains("out of range"));
    }

    #[test]
    fn refuses_strided_layouts_but_not_unit_dims() {
        assert!(tensor_view(&rebuild("FloatStorage", 6, 0, &[2, 3], &[1, 2])).unwrap_err().contains("contiguous"));
        assert!(tensor_view(&rebuild("FloatStorage", 6, 0, &[1, 6], &[99, 1])).unwrap().is_some());
    }

    #[test]
    fn names_unsupported_dtypes_without_quoting_unknown_ones() {
        assert!(tensor_view(&rebuild("LongStorage", 6, 0, &[6], &[1])).unwrap_err().contains("int64"));
        let e = tensor_view(&rebuild("root:x:0:0:secret", 6, 0, &[6], &[1])).unwrap_err();
        assert!(!e.contains("root"), "{e}");
    }

    #[test]
    fn short_argument_tuples_are_errors_not_panics() {
        let short = Object::Reduce {
            callable: Box::new(class("torch._utils", "_rebuild_tensor_v2")),
            args: Box::new(Object::Tuple(vec![Object::None])),
        };
        assert!(tensor_view(&short).unwrap_err().contains("too few"));
        let wrapped = Object::Reduce {
            callable: Box::new(class("torch._tensor", "_rebuild_from_type_v2")),
            args: Box::new(Object::Tuple(vec![])),
        };
        assert!(tensor_view(&wrapped).unwrap_err().contains("too few"));
    }

    #[test]
    fn metadata_is_not_a_tensor() {
        assert_eq!(tensor_view(&Object::Int(3)), Ok(None));
        assert_eq!(tensor_view(&Object::Dict(vec![])), Ok(None));
    }
}
