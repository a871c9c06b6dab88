//! Loading of encoded ONNX models into tract, and the specs of their real inputs.
//!
//! Stored output shapes and `value_info` are ignored, because a rewritten or
//! re-exported model often carries shapes that no longer match what tract
//! infers for the input shape chosen for a run.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use serde::Serialize;
use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension;
use tract_onnx::prelude::*;

/// Maximum length of one link of a tract error chain in [`tract_error_line`].
const MAX_CONTEXT_CHARS: usize = 200;

/// Maximum number of links of a tract error chain kept by [`tract_error_line`].
const MAX_CONTEXT_LINKS: usize = 6;

/// Failure to load an ONNX model into tract.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a valid ONNX `ModelProto`.
    #[error("model `{model}` is not a valid ONNX protobuf: {reason}; check that the file is an .onnx model")]
    InvalidProtobuf { model: String, reason: String },

    /// The `ModelProto` has no graph.
    #[error("model `{model}` has no graph; the file is not a complete ONNX model")]
    MissingGraph { model: String },

    /// A graph input has no tensor type, or an element type tract cannot run.
    #[error("input `{input}` of model `{model}` {problem}, but tract 0.23 runs only bool, integer, float16, float32 and float64 inputs; convert the model to one of these types")]
    UnsupportedInput {
        model: String,
        input: String,
        problem: String,
    },

    /// The model stores initializers in external files, but no model directory was given.
    #[error("model `{model}` stores initializer `{tensor}` in an external file, but no model directory was given; pass the directory of the .onnx file")]
    MissingModelDir { model: String, tensor: String },

    /// tract rejected the model while parsing it.
    #[error("tract failed to load model `{model}`: {reason}")]
    Tract { model: String, reason: String },

    /// The graph reads tensors that neither a graph input, an initializer nor a node provides.
    #[error(
        "model `{model}` reads tensors that nothing produces: {names:?}; the graph is incomplete"
    )]
    UnresolvedTensors { model: String, names: Vec<String> },
}

/// One dimension of a model input as the model declares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dim {
    /// A fixed size (`dim_value`).
    Fixed(usize),

    /// A named size (`dim_param`), shared by every axis that uses the same name.
    Symbol(String),

    /// A size the model leaves open: no value, `?`, or a negative `dim_value`.
    Unknown,
}

/// A real input of a model: a graph input that no initializer provides.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InputSpec {
    /// Name of the graph input.
    pub name: String,

    /// Element type declared by the model.
    #[serde(serialize_with = "super::serialize_datum_type")]
    pub datum_type: DatumType,

    /// Declared dimensions, `None` when the model gives no shape at all.
    pub dims: Option<Vec<Dim>>,
}

/// A model parsed by tract, with the specs of its real inputs and its output names.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    label: String,
    model: InferenceModel,
    inputs: Vec<InputSpec>,
    output_names: Vec<String>,
}

impl LoadedModel {
    /// Label used for this model in errors and reports, such as `original` or a file name.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Real inputs in the order the graph declares them.
    pub fn input_specs(&self) -> &[InputSpec] {
        &self.inputs
    }

    /// Graph output names in declaration order.
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// Returns the tract model before typing, with the input facts the ONNX file declares.
    pub fn inference_model(&self) -> &InferenceModel {
        &self.model
    }
}

/// Parses encoded ONNX bytes into a tract model.
///
/// `model_dir` is the directory that external data locations are relative to,
/// normally the directory of the `.onnx` file. Without it, a model with external
/// data fails to load. `label` names the model in errors.
pub fn load_model(
    label: &str,
    bytes: &[u8],
    model_dir: Option<&Path>,
) -> Result<LoadedModel, LoadError> {
    let onnx = tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(true);

    let proto =
        onnx.proto_model_for_read(&mut &bytes[..])
            .map_err(|err| LoadError::InvalidProtobuf {
                model: label.to_string(),
                reason: tract_error_line(&err),
            })?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| LoadError::MissingGraph {
            model: label.to_string(),
        })?;

    let inputs = real_input_specs(label, graph)?;
    if model_dir.is_none() {
        reject_external_data(label, graph)?;
    }
    let output_names = graph
        .output
        .iter()
        .map(|output| output.name.clone())
        .collect();

    let dir = model_dir.map(|dir| dir.to_string_lossy().into_owned());
    let parsed =
        call_tract(|| onnx.parse(&proto, dir.as_deref())).map_err(|reason| LoadError::Tract {
            model: label.to_string(),
            reason,
        })?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(LoadError::UnresolvedTensors {
            model: label.to_string(),
            names: parsed.unresolved_inputs,
        });
    }

    log::debug!(
        "loaded model `{label}`: {} real inputs, {} outputs",
        inputs.len(),
        graph.output.len()
    );
    Ok(LoadedModel {
        label: label.to_string(),
        model: parsed.model,
        inputs,
        output_names,
    })
}

/// Rejects a top-level initializer stored in an external file.
///
/// tract checks subgraphs too, but its message does not say what to do.
fn reject_external_data(label: &str, graph: &pb::GraphProto) -> Result<(), LoadError> {
    let external = pb::tensor_proto::DataLocation::External as i32;

    match graph
        .initializer
        .iter()
        .find(|tensor| tensor.data_location == Some(external))
    {
        Some(tensor) => Err(LoadError::MissingModelDir {
            model: label.to_string(),
            tensor: tensor.name.clone(),
        }),
        None => Ok(()),
    }
}

/// Lists the graph inputs that no initializer provides, in graph order.
fn real_input_specs(label: &str, graph: &pb::GraphProto) -> Result<Vec<InputSpec>, LoadError> {
    let initialized: std::collections::HashSet<&str> = graph
        .initializer
        .iter()
        .map(|tensor| tensor.name.as_str())
        .collect();

    graph
        .input
        .iter()
        .filter(|input| !initialized.contains(input.name.as_str()))
        .map(|input| input_spec(label, input))
        .collect()
}

fn input_spec(label: &str, input: &pb::ValueInfoProto) -> Result<InputSpec, LoadError> {
    let unsupported = |problem: String| LoadError::UnsupportedInput {
        model: label.to_string(),
        input: input.name.clone(),
        problem,
    };

    let Some(pb::type_proto::Value::TensorType(tensor_type)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(unsupported("has no tensor type".to_string()));
    };
    let datum_type = datum_type_from_onnx(tensor_type.elem_type).ok_or_else(|| {
        unsupported(format!(
            "has element type {}",
            onnx_type_name(tensor_type.elem_type)
        ))
    })?;

    let dims = tensor_type
        .shape
        .as_ref()
        .map(|shape| shape.dim.iter().map(dim_from_proto).collect());
    Ok(InputSpec {
        name: input.name.clone(),
        datum_type,
        dims,
    })
}

fn dim_from_proto(dim: &pb::tensor_shape_proto::Dimension) -> Dim {
    match &dim.value {
        Some(dimension::Value::DimValue(value)) => usize::try_from(*value)
            .map(Dim::Fixed)
            .unwrap_or(Dim::Unknown),
        Some(dimension::Value::DimParam(name)) if !name.is_empty() && name != "?" => {
            Dim::Symbol(name.clone())
        }
        _ => Dim::Unknown,
    }
}

/// Maps an ONNX `TensorProto.DataType` code to the tract type this module can feed and compare.
///
/// Strings, bfloat16, complex and 8-bit float codes return `None`: tract 0.23
/// has no datum type for bfloat16 or the 8-bit floats, and inputs of strings
/// cannot be generated or compared here.
pub(crate) fn datum_type_from_onnx(code: i32) -> Option<DatumType> {
    use pb::tensor_proto::DataType;

    match DataType::try_from(code).ok()? {
        DataType::Bool => Some(DatumType::Bool),
        DataType::Uint8 => Some(DatumType::U8),
        DataType::Uint16 => Some(DatumType::U16),
        DataType::Uint32 => Some(DatumType::U32),
        DataType::Uint64 => Some(DatumType::U64),
        DataType::Int8 => Some(DatumType::I8),
        DataType::Int16 => Some(DatumType::I16),
        DataType::Int32 => Some(DatumType::I32),
        DataType::Int64 => Some(DatumType::I64),
        DataType::Float16 => Some(DatumType::F16),
        DataType::Float => Some(DatumType::F32),
        DataType::Double => Some(DatumType::F64),
        _ => None,
    }
}

/// Names an ONNX `TensorProto.DataType` code, such as `BFLOAT16`, for messages.
pub(crate) fn onnx_type_name(code: i32) -> String {
    match pb::tensor_proto::DataType::try_from(code) {
        Ok(data_type) => data_type.as_str_name().to_string(),
        Err(_) => format!("code {code}"),
    }
}

/// Runs a tract call, turning both its error and a panic inside tract into one readable line.
///
/// tract 0.23 still panics on some malformed inputs (`unimplemented!` in its
/// tensor loader, for one), so the call is wrapped in `catch_unwind`.
pub(crate) fn call_tract<T>(call: impl FnOnce() -> TractResult<T>) -> Result<T, String> {
    INSIDE_TRACT_CALL.with(|inside| inside.set(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(call));
    INSIDE_TRACT_CALL.with(|inside| inside.set(false));
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(tract_error_line(&err)),
        Err(payload) => Err(format!(
            "tract panicked: {}",
            panic_message(payload.as_ref())
        )),
    }
}

thread_local! {
    static INSIDE_TRACT_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Returns true while this thread runs a tract call whose panics are caught
/// and turned into errors, so that a panic hook can stay quiet about them.
pub fn inside_tract_call() -> bool {
    INSIDE_TRACT_CALL.with(|inside| inside.get())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        return text.to_string();
    }
    if let Some(text) = payload.downcast_ref::<String>() {
        return text.clone();
    }
    "no message".to_string()
}

/// Formats a tract error chain as one line: `outer context: ... : root cause`.
///
/// Each link keeps its first line, cut to 200 characters, because tract puts
/// whole node dumps in some links. Repeated links are dropped, and a chain of
/// more than 6 links keeps the outermost 2 and the innermost 4, which carry the
/// node name and the root cause.
pub fn tract_error_line(err: &TractError) -> String {
    let mut links: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = shorten_link(&cause.to_string());
        if !text.is_empty() && links.last() != Some(&text) {
            links.push(text);
        }
    }

    if links.len() > MAX_CONTEXT_LINKS {
        let tail = links.split_off(links.len() - (MAX_CONTEXT_LINKS - 2));
        links.truncate(2);
        links.push("...".to_string());
        links.extend(tail);
    }
    links.join(": ")
}

fn shorten_link(text: &str) -> String {
    let first_line = text.lines().next().unwrap_or("").trim();
    if first_line.chars().count() <= MAX_CONTEXT_CHARS {
        return first_line.to_string();
    }

    let cut: String = first_line.chars().take(MAX_CONTEXT_CHARS).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::test_models::{self, ModelBuilder};

    #[test]
    fn load_lists_real_inputs_only() {
        let bytes = test_models::conv_chain(&[("w1", 4), ("w2", 2)], 3);

        let model = load_model("chain", &bytes, None).unwrap();

        let names: Vec<&str> = model
            .input_specs()
            .iter()
            .map(|spec| spec.name.as_str())
            .collect();
        assert_eq!(names, ["x"]);
        assert_eq!(model.output_names(), ["y"]);
        assert_eq!(model.input_specs()[0].datum_type, DatumType::F32);
        assert_eq!(
            model.input_specs()[0].dims,
            Some(vec![
                Dim::Symbol("batch".into()),
                Dim::Fixed(3),
                Dim::Symbol("height".into()),
                Dim::Unknown
            ])
        );
    }

    #[test]
    fn load_rejects_garbage_bytes() {
        let err = load_model("garbage", b"\xff\xff\xff\xff not a model", None).unwrap_err();

        assert!(matches!(err, LoadError::InvalidProtobuf { .. }), "{err}");
        assert!(err.to_string().contains("`garbage`"), "{err}");
    }

    #[test]
    fn load_rejects_model_without_graph() {
        let bytes = test_models::encode(&pb::ModelProto {
            ir_version: 8,
            ..Default::default()
        });

        let err = load_model("empty", &bytes, None).unwrap_err();

        assert!(matches!(err, LoadError::MissingGraph { .. }), "{err}");
    }

    #[test]
    fn load_rejects_bfloat16_input() {
        let mut builder = ModelBuilder::new();
        builder.input(
            "x",
            pb::tensor_proto::DataType::Bfloat16,
            &[test_models::fixed(2)],
        );
        builder.node("Identity", &["x"], &["y"], vec![]);
        builder.output("y");

        let err = load_model("bf16", &builder.encode(), None).unwrap_err();

        let text = err.to_string();
        assert!(matches!(err, LoadError::UnsupportedInput { .. }), "{text}");
        assert!(text.contains("BFLOAT16"), "{text}");
        assert!(text.contains("`x`"), "{text}");
    }

    #[test]
    fn load_reports_unknown_operator_in_one_line() {
        let mut builder = ModelBuilder::new();
        builder.input(
            "x",
            pb::tensor_proto::DataType::Float,
            &[test_models::fixed(2)],
        );
        builder.node("NoSuchOp", &["x"], &["y"], vec![]);
        builder.output("y");
        let model = load_model("odd", &builder.encode(), None).unwrap();

        let typed = call_tract(|| model.inference_model().clone().into_typed());

        let reason = typed.unwrap_err();
        assert!(!reason.contains('\n'), "{reason}");
        assert!(reason.contains("NoSuchOp"), "{reason}");
    }

    #[test]
    fn load_ignores_wrong_stored_output_shape() {
        let mut builder = ModelBuilder::new();
        builder.input(
            "x",
            pb::tensor_proto::DataType::Float,
            &[test_models::fixed(2), test_models::fixed(3)],
        );
        builder.node("Relu", &["x"], &["y"], vec![]);
        builder.output_with_shape("y", pb::tensor_proto::DataType::Float, &[7, 7, 7]);
        builder.value_info("y", &[9]);

        let model = load_model("stale", &builder.encode(), None).unwrap();
        let typed = call_tract(|| model.inference_model().clone().into_typed());

        assert!(typed.is_ok(), "{:?}", typed.err());
    }

    #[test]
    fn load_reads_external_data_from_model_dir() {
        let dir = tempfile::tempdir().unwrap();
        let bias: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect();
        std::fs::write(dir.path().join("bias.bin"), &bias).unwrap();
        let bytes = test_models::add_external_bias("bias.bin", 2);

        let without_dir = load_model("external", &bytes, None);
        let with_dir = load_model("external", &bytes, Some(dir.path()));

        assert!(
            matches!(without_dir, Err(LoadError::MissingModelDir { ref tensor, .. }) if tensor == "bias"),
            "{:?}",
            without_dir.err()
        );
        assert!(with_dir.is_ok(), "{:?}", with_dir.err());
    }

    #[test]
    fn error_line_keeps_outer_and_root_links() {
        let mut err = TractError::msg("root cause");
        for level in 0..10 {
            err = err.context(format!("level {level}\nsecond line"));
        }

        let line = tract_error_line(&err);

        assert!(line.starts_with("level 9: level 8: ...: "), "{line}");
        assert!(
            line.ends_with("level 2: level 1: level 0: root cause"),
            "{line}"
        );
        assert!(!line.contains("second line"), "{line}");
    }

    #[test]
    fn call_tract_turns_panic_into_error() {
        let result: Result<(), String> = call_tract(|| panic!("boom in tract"));

        assert_eq!(result.unwrap_err(), "tract panicked: boom in tract");
    }
}
