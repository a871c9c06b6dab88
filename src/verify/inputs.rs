//! The full set of input tensors for a run: given tensors, plus seeded random ones for the rest.
//!
//! The set is built once from the first model's input specs and fed to both
//! models, so that the comparison runs both on the same data.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use tract_onnx::prelude::*;

use super::load::{Dim, InputSpec, LoadedModel};
use super::{datum_type_name, NamedTensor};

/// Seed of the random inputs unless the request sets another: the ASCII bytes of `onnxfold`.
pub const DEFAULT_SEED: u64 = 0x6f6e_6e78_666f_6c64;

/// Size chosen for an unset symbolic dimension whose name looks like a batch size.
pub const DEFAULT_BATCH_DIM: usize = 1;

/// Size chosen for any other unset symbolic or unknown dimension.
pub const DEFAULT_DIM: usize = 8;

/// Exclusive upper bound of random integer inputs, which are drawn from `0..4`.
const RANDOM_INT_BOUND: u64 = 4;

/// Largest generated input, in bytes. Verification keeps the input and the
/// activations of two models in memory at once, so a larger input would more
/// likely exhaust memory (or abort on a failed allocation) than verify anything.
const MAX_INPUT_BYTES: usize = 1 << 31;

/// Failure to build the input set for a model.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A tensor or shape override names an input the model does not have.
    #[error("{origin} names input `{input}`, but model `{model}` has no such input; its inputs are: {}", .known.join(", "))]
    UnknownInput {
        model: String,
        input: String,
        origin: ShapeOrigin,
        known: Vec<String>,
    },

    /// Two tensors or two shape overrides for one input.
    #[error("input `{input}` of model `{model}` has more than one {origin}; keep one")]
    DuplicateInput {
        model: String,
        input: String,
        origin: ShapeOrigin,
    },

    /// A given tensor has another element type than the model input.
    #[error("given tensor for input `{input}` of model `{model}` is {found}, but the model expects {expected}; convert the data to {expected}")]
    TypeMismatch {
        model: String,
        input: String,
        expected: String,
        found: String,
    },

    /// A given tensor or shape override has another rank than the model input.
    #[error("{origin} for input `{input}` of model `{model}` has shape {shape:?}, but the model declares {expected} dimensions")]
    RankMismatch {
        model: String,
        input: String,
        origin: ShapeOrigin,
        shape: Vec<usize>,
        expected: usize,
    },

    /// A given tensor or shape override disagrees with a fixed dimension of the model input.
    #[error("{origin} for input `{input}` of model `{model}` has shape {shape:?}, but the model fixes dimension {axis} to {expected}")]
    DimMismatch {
        model: String,
        input: String,
        origin: ShapeOrigin,
        shape: Vec<usize>,
        axis: usize,
        expected: usize,
    },

    /// Two axes that share a symbolic dimension got different sizes.
    #[error("symbolic dimension `{symbol}` of model `{model}` is {first_value} in {first} but {second_value} in {second}; give consistent shapes")]
    SymbolConflict {
        model: String,
        symbol: String,
        first: String,
        first_value: usize,
        second: String,
        second_value: usize,
    },

    /// A given tensor and a shape override for the same input disagree.
    #[error("input `{input}` of model `{model}` has a given tensor of shape {tensor_shape:?} and a shape override {override_shape:?}; drop one")]
    OverrideConflict {
        model: String,
        input: String,
        tensor_shape: Vec<usize>,
        override_shape: Vec<usize>,
    },

    /// An input without tensor, override, nor declared shape.
    #[error("input `{input}` of model `{model}` declares no shape; give a tensor or a shape override for it")]
    MissingShape { model: String, input: String },

    /// The shape needs more than `MAX_INPUT_BYTES` bytes.
    #[error("input `{input}` of model `{model}` would have shape {shape:?}, more than the {} GiB allowed for a generated input; give a smaller shape override or skip verification", MAX_INPUT_BYTES >> 30)]
    ShapeTooLarge {
        model: String,
        input: String,
        shape: Vec<usize>,
    },

    /// Random values cannot be generated for the input's element type.
    #[error("input `{input}` of model `{model}` has element type {datum_type}, for which no random values can be generated; give a tensor for it")]
    UnsupportedType {
        model: String,
        input: String,
        datum_type: String,
    },
}

/// Source of a shape for an input, named in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeOrigin {
    /// A tensor the user gave.
    GivenTensor,

    /// A `NAME=d0,d1,...` shape override.
    ShapeOverride,
}

impl fmt::Display for ShapeOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeOrigin::GivenTensor => f.write_str("given tensor"),
            ShapeOrigin::ShapeOverride => f.write_str("shape override"),
        }
    }
}

/// A requested shape for one input, written `NAME=1,3,640,640`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeOverride {
    /// Name of the model input.
    pub input: String,

    /// Full shape of the input.
    pub shape: Vec<usize>,
}

/// Failure to parse a shape override.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid shape override `{text}`: {reason}; expected NAME=d0,d1,... such as images=1,3,640,640"
)]
pub struct ParseShapeError {
    /// The text as given.
    pub text: String,

    /// The reason the text is invalid.
    pub reason: String,
}

impl FromStr for ShapeOverride {
    type Err = ParseShapeError;

    /// Parses `NAME=d0,d1,...`, splitting at the last `=` because input names may contain `=`.
    fn from_str(text: &str) -> Result<ShapeOverride, ParseShapeError> {
        let invalid = |reason: &str| ParseShapeError {
            text: text.to_string(),
            reason: reason.to_string(),
        };

        let (input, dims) = text.rsplit_once('=').ok_or_else(|| invalid("no `=`"))?;
        if input.is_empty() {
            return Err(invalid("the input name is empty"));
        }
        if dims.trim().is_empty() {
            return Err(invalid("the shape is empty"));
        }

        let shape = dims
            .split(',')
            .map(|dim| dim.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid("each dimension must be a non-negative integer"))?;
        Ok(ShapeOverride {
            input: input.to_string(),
            shape,
        })
    }
}

/// The user's request for a run: tensors for some inputs, shape overrides, and the random seed.
#[derive(Clone, Debug)]
pub struct InputRequest {
    /// Tensors for some inputs, by input name.
    pub tensors: Vec<NamedTensor>,

    /// Shapes for inputs that get random values, also used to set symbolic dimensions.
    pub shapes: Vec<ShapeOverride>,

    /// Seed of the random values.
    pub seed: u64,
}

impl Default for InputRequest {
    fn default() -> InputRequest {
        InputRequest {
            tensors: Vec::new(),
            shapes: Vec::new(),
            seed: DEFAULT_SEED,
        }
    }
}

/// Source of the values of one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputOrigin {
    /// The user gave the tensor.
    Given,

    /// Seeded random values.
    Random,
}

/// One input of the set.
#[derive(Clone, Debug)]
pub struct InputValue {
    /// Model input name.
    pub name: String,

    /// The values fed to both models.
    pub tensor: Tensor,

    /// Source of the values.
    pub origin: InputOrigin,
}

/// A size chosen for a symbolic or unknown dimension that nothing set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChosenDefault {
    /// The `dim_param` name, or `INPUT[AXIS]` for a dimension without name.
    pub dim: String,

    /// The chosen size.
    pub value: usize,
}

impl fmt::Display for ChosenDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.dim, self.value)
    }
}

/// Every input of a model with its values, in the order the model declares them.
///
/// Serializes as a summary: the seed, each input's name, element type, shape and
/// origin without its values, and the chosen defaults.
#[derive(Clone, Debug)]
pub struct InputSet {
    /// The inputs in model order.
    pub inputs: Vec<InputValue>,

    /// Defaults chosen for dimensions that neither a tensor nor an override set.
    pub chosen_defaults: Vec<ChosenDefault>,

    /// Seed of the random values.
    pub seed: u64,
}

impl InputSet {
    /// Looks up an input's tensor by name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.inputs
            .iter()
            .find(|input| input.name == name)
            .map(|input| &input.tensor)
    }
}

#[derive(Serialize)]
struct InputSummary<'a> {
    name: &'a str,
    element_type: String,
    shape: &'a [usize],
    origin: InputOrigin,
}

#[derive(Serialize)]
struct InputSetSummary<'a> {
    seed: u64,
    inputs: Vec<InputSummary<'a>>,
    chosen_defaults: &'a [ChosenDefault],
}

impl Serialize for InputSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let inputs = self
            .inputs
            .iter()
            .map(|input| InputSummary {
                name: &input.name,
                element_type: datum_type_name(input.tensor.datum_type()),
                shape: input.tensor.shape(),
                origin: input.origin,
            })
            .collect();
        InputSetSummary {
            seed: self.seed,
            inputs,
            chosen_defaults: &self.chosen_defaults,
        }
        .serialize(serializer)
    }
}

/// Builds the input set for `model` from the user's request.
pub fn build_inputs(model: &LoadedModel, request: &InputRequest) -> Result<InputSet, InputError> {
    build_inputs_for_specs(model.label(), model.input_specs(), request)
}

/// Builds the input set for inputs `specs` of the model labelled `model`.
///
/// Each symbolic dimension takes its size from a given tensor, else from a
/// shape override, else a default: [`DEFAULT_BATCH_DIM`] when its name looks
/// like a batch size (`N`, `B`, `bs` or a name containing `batch`), else
/// [`DEFAULT_DIM`]. Unknown dimensions get [`DEFAULT_DIM`].
/// Inputs without a given tensor get seeded random values: floats uniform in
/// [-1, 1], integers in `0..4`, booleans `true`.
pub fn build_inputs_for_specs(
    model: &str,
    specs: &[InputSpec],
    request: &InputRequest,
) -> Result<InputSet, InputError> {
    let given_tensors = index_by_input(
        model,
        specs,
        ShapeOrigin::GivenTensor,
        request.tensors.iter().map(|t| (t.name.as_str(), &t.tensor)),
    )?;
    let overrides = index_by_input(
        model,
        specs,
        ShapeOrigin::ShapeOverride,
        request.shapes.iter().map(|o| (o.input.as_str(), &o.shape)),
    )?;

    let mut binder = DimBinder::new(model);
    for spec in specs {
        bind_known_shape(
            &mut binder,
            spec,
            given_tensors.get(spec.name.as_str()).copied(),
            overrides.get(spec.name.as_str()).copied(),
        )?;
    }

    let mut inputs = Vec::with_capacity(specs.len());
    for spec in specs {
        let input = match given_tensors.get(spec.name.as_str()) {
            Some(tensor) => InputValue {
                name: spec.name.clone(),
                tensor: (*tensor).clone(),
                origin: InputOrigin::Given,
            },
            None => random_input(
                &mut binder,
                spec,
                overrides.get(spec.name.as_str()).copied(),
                request.seed,
            )?,
        };
        inputs.push(input);
    }

    for default in &binder.chosen_defaults {
        log::debug!("model `{model}`: no size given for dimension {default}; using the default");
    }
    Ok(InputSet {
        inputs,
        chosen_defaults: binder.chosen_defaults,
        seed: request.seed,
    })
}

/// Indexes user values by input name, rejecting unknown and repeated names.
fn index_by_input<'a, T>(
    model: &str,
    specs: &[InputSpec],
    origin: ShapeOrigin,
    values: impl Iterator<Item = (&'a str, &'a T)>,
) -> Result<HashMap<&'a str, &'a T>, InputError> {
    let mut by_name = HashMap::new();

    for (name, value) in values {
        if !specs.iter().any(|spec| spec.name == name) {
            let known = specs.iter().map(|spec| spec.name.clone()).collect();
            return Err(InputError::UnknownInput {
                model: model.to_string(),
                input: name.to_string(),
                origin,
                known,
            });
        }
        if by_name.insert(name, value).is_some() {
            return Err(InputError::DuplicateInput {
                model: model.to_string(),
                input: name.to_string(),
                origin,
            });
        }
    }
    Ok(by_name)
}

/// Checks a given tensor or override against the spec and binds the symbols it sets.
fn bind_known_shape(
    binder: &mut DimBinder,
    spec: &InputSpec,
    tensor: Option<&Tensor>,
    shape_override: Option<&Vec<usize>>,
) -> Result<(), InputError> {
    if let Some(tensor) = tensor {
        if tensor.datum_type() != spec.datum_type {
            return Err(InputError::TypeMismatch {
                model: binder.model.clone(),
                input: spec.name.clone(),
                expected: datum_type_name(spec.datum_type),
                found: datum_type_name(tensor.datum_type()),
            });
        }
        binder.bind_shape(spec, tensor.shape(), ShapeOrigin::GivenTensor)?;
    }

    if let Some(shape) = shape_override {
        if let Some(tensor) = tensor.filter(|tensor| tensor.shape() != shape.as_slice()) {
            return Err(InputError::OverrideConflict {
                model: binder.model.clone(),
                input: spec.name.clone(),
                tensor_shape: tensor.shape().to_vec(),
                override_shape: shape.clone(),
            });
        }
        binder.bind_shape(spec, shape, ShapeOrigin::ShapeOverride)?;
    }
    Ok(())
}

fn random_input(
    binder: &mut DimBinder,
    spec: &InputSpec,
    shape_override: Option<&Vec<usize>>,
    seed: u64,
) -> Result<InputValue, InputError> {
    let shape = match shape_override {
        Some(shape) => shape.clone(),
        None => binder.resolve_shape(spec)?,
    };

    let bytes = shape
        .iter()
        .try_fold(spec.datum_type.size_of(), |bytes, &dim| {
            bytes.checked_mul(dim)
        });
    if bytes.is_none_or(|bytes| bytes > MAX_INPUT_BYTES) {
        return Err(InputError::ShapeTooLarge {
            model: binder.model.clone(),
            input: spec.name.clone(),
            shape,
        });
    }

    let mut rng = SplitMix64::new(seed ^ fnv1a(spec.name.as_bytes()));
    let tensor = random_tensor(spec.datum_type, &shape, &mut rng).ok_or_else(|| {
        InputError::UnsupportedType {
            model: binder.model.clone(),
            input: spec.name.clone(),
            datum_type: datum_type_name(spec.datum_type),
        }
    })?;
    Ok(InputValue {
        name: spec.name.clone(),
        tensor,
        origin: InputOrigin::Random,
    })
}

/// Sizes of symbolic dimensions, shared across inputs, with where each was set.
struct DimBinder {
    model: String,
    sizes: BTreeMap<String, (usize, String)>,
    chosen_defaults: Vec<ChosenDefault>,
}

impl DimBinder {
    fn new(model: &str) -> DimBinder {
        DimBinder {
            model: model.to_string(),
            sizes: BTreeMap::new(),
            chosen_defaults: Vec::new(),
        }
    }

    /// Checks `shape` against the declared dims and records the symbols it sets.
    fn bind_shape(
        &mut self,
        spec: &InputSpec,
        shape: &[usize],
        origin: ShapeOrigin,
    ) -> Result<(), InputError> {
        let Some(dims) = &spec.dims else {
            return Ok(());
        };
        if dims.len() != shape.len() {
            return Err(InputError::RankMismatch {
                model: self.model.clone(),
                input: spec.name.clone(),
                origin,
                shape: shape.to_vec(),
                expected: dims.len(),
            });
        }

        for (axis, (dim, &size)) in dims.iter().zip(shape).enumerate() {
            match dim {
                Dim::Fixed(expected) if *expected != size => {
                    return Err(InputError::DimMismatch {
                        model: self.model.clone(),
                        input: spec.name.clone(),
                        origin,
                        shape: shape.to_vec(),
                        axis,
                        expected: *expected,
                    });
                }
                Dim::Symbol(symbol) => self.bind_symbol(
                    symbol,
                    size,
                    format!("{origin} for `{}` axis {axis}", spec.name),
                )?,
                _ => {}
            }
        }
        Ok(())
    }

    fn bind_symbol(&mut self, symbol: &str, size: usize, place: String) -> Result<(), InputError> {
        match self.sizes.get(symbol) {
            Some((bound, first)) if *bound != size => Err(InputError::SymbolConflict {
                model: self.model.clone(),
                symbol: symbol.to_string(),
                first: first.clone(),
                first_value: *bound,
                second: place,
                second_value: size,
            }),
            Some(_) => Ok(()),
            None => {
                self.sizes.insert(symbol.to_string(), (size, place));
                Ok(())
            }
        }
    }

    /// Returns the declared shape with every dimension sized, choosing defaults for unset ones.
    fn resolve_shape(&mut self, spec: &InputSpec) -> Result<Vec<usize>, InputError> {
        let dims = spec.dims.as_ref().ok_or_else(|| InputError::MissingShape {
            model: self.model.clone(),
            input: spec.name.clone(),
        })?;

        let mut shape = Vec::with_capacity(dims.len());
        for (axis, dim) in dims.iter().enumerate() {
            let size = match dim {
                Dim::Fixed(size) => *size,
                Dim::Symbol(symbol) => self.symbol_or_default(symbol),
                Dim::Unknown => self.unnamed_default(&spec.name, axis),
            };
            shape.push(size);
        }
        Ok(shape)
    }

    fn symbol_or_default(&mut self, symbol: &str) -> usize {
        if let Some((size, _)) = self.sizes.get(symbol) {
            return *size;
        }

        let size = if looks_like_batch(symbol) {
            DEFAULT_BATCH_DIM
        } else {
            DEFAULT_DIM
        };
        self.sizes
            .insert(symbol.to_string(), (size, "default".to_string()));
        self.chosen_defaults.push(ChosenDefault {
            dim: symbol.to_string(),
            value: size,
        });
        size
    }

    fn unnamed_default(&mut self, input: &str, axis: usize) -> usize {
        self.chosen_defaults.push(ChosenDefault {
            dim: format!("{input}[{axis}]"),
            value: DEFAULT_DIM,
        });
        DEFAULT_DIM
    }
}

fn looks_like_batch(symbol: &str) -> bool {
    let lower = symbol.to_ascii_lowercase();
    matches!(lower.as_str(), "n" | "b" | "bs") || lower.contains("batch")
}

/// Fills a tensor of `datum_type` with random values, or returns `None` for types without a generator.
fn random_tensor(datum_type: DatumType, shape: &[usize], rng: &mut SplitMix64) -> Option<Tensor> {
    let count: usize = shape.iter().product();

    let tensor = match datum_type {
        DatumType::F16 => from_values(
            shape,
            (0..count).map(|_| f16::from_f64(rng.next_signed_unit())),
        ),
        DatumType::F32 => from_values(shape, (0..count).map(|_| rng.next_signed_unit() as f32)),
        DatumType::F64 => from_values(shape, (0..count).map(|_| rng.next_signed_unit())),
        DatumType::Bool => from_values(shape, (0..count).map(|_| true)),
        DatumType::I8 => from_values(shape, (0..count).map(|_| rng.next_small() as i8)),
        DatumType::I16 => from_values(shape, (0..count).map(|_| rng.next_small() as i16)),
        DatumType::I32 => from_values(shape, (0..count).map(|_| rng.next_small() as i32)),
        DatumType::I64 => from_values(shape, (0..count).map(|_| rng.next_small() as i64)),
        DatumType::U8 => from_values(shape, (0..count).map(|_| rng.next_small() as u8)),
        DatumType::U16 => from_values(shape, (0..count).map(|_| rng.next_small() as u16)),
        DatumType::U32 => from_values(shape, (0..count).map(|_| rng.next_small() as u32)),
        DatumType::U64 => from_values(shape, (0..count).map(|_| rng.next_small())),
        _ => return None,
    };
    tensor.ok()
}

fn from_values<T: Datum + Copy>(
    shape: &[usize],
    values: impl Iterator<Item = T>,
) -> TractResult<Tensor> {
    let values: Vec<T> = values.collect();
    Tensor::from_shape(shape, &values)
}

/// 64-bit FNV-1a hash, so that each input name gets its own random stream.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a small generator whose output
/// depends only on the seed, on every platform.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), from the top 53 bits.
    fn next_signed_unit(&mut self) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        2.0 * unit - 1.0
    }

    /// Uniform in `0..RANDOM_INT_BOUND`, exact because the bound divides 2^64.
    fn next_small(&mut self) -> u64 {
        self.next_u64() % RANDOM_INT_BOUND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, datum_type: DatumType, dims: Vec<Dim>) -> InputSpec {
        InputSpec {
            name: name.to_string(),
            datum_type,
            dims: Some(dims),
        }
    }

    fn sym(name: &str) -> Dim {
        Dim::Symbol(name.to_string())
    }

    fn image_spec() -> InputSpec {
        spec(
            "images",
            DatumType::F32,
            vec![sym("batch"), Dim::Fixed(3), sym("height"), sym("width")],
        )
    }

    fn given(name: &str, tensor: Tensor) -> NamedTensor {
        NamedTensor {
            name: name.to_string(),
            tensor,
        }
    }

    #[test]
    fn splitmix_matches_reference_values() {
        // Expected values for seed 1234567 come from a Python port of Vigna's splitmix64.c.
        let mut rng = SplitMix64::new(1234567);

        let values: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();

        assert_eq!(
            values,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn defaults_chosen_for_symbols() {
        let specs = [image_spec()];

        let set = build_inputs_for_specs("m", &specs, &InputRequest::default()).unwrap();

        assert_eq!(set.inputs[0].tensor.shape(), &[1, 3, 8, 8]);
        let chosen: Vec<String> = set
            .chosen_defaults
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(chosen, ["batch=1", "height=8", "width=8"]);
    }

    #[test]
    fn defaults_for_n_and_unnamed_dims() {
        let specs = [spec("x", DatumType::F32, vec![sym("N"), Dim::Unknown])];

        let set = build_inputs_for_specs("m", &specs, &InputRequest::default()).unwrap();

        assert_eq!(set.inputs[0].tensor.shape(), &[1, 8]);
        assert_eq!(
            set.chosen_defaults[1],
            ChosenDefault {
                dim: "x[1]".into(),
                value: 8
            }
        );
    }

    #[test]
    fn given_tensor_sets_shared_symbol() {
        let specs = [
            image_spec(),
            spec("mask", DatumType::Bool, vec![sym("batch"), sym("height")]),
        ];
        let request = InputRequest {
            tensors: vec![given("images", Tensor::zero::<f32>(&[2, 3, 5, 7]).unwrap())],
            ..Default::default()
        };

        let set = build_inputs_for_specs("m", &specs, &request).unwrap();

        assert_eq!(set.inputs[0].origin, InputOrigin::Given);
        assert_eq!(set.inputs[1].origin, InputOrigin::Random);
        assert_eq!(set.inputs[1].tensor.shape(), &[2, 5]);
        assert!(set.chosen_defaults.is_empty(), "{:?}", set.chosen_defaults);
    }

    #[test]
    fn override_sets_shape_and_symbols() {
        let specs = [
            image_spec(),
            spec("scale", DatumType::F32, vec![sym("batch")]),
        ];
        let request = InputRequest {
            shapes: vec!["images=4,3,640,480".parse().unwrap()],
            ..Default::default()
        };

        let set = build_inputs_for_specs("m", &specs, &request).unwrap();

        assert_eq!(set.inputs[0].tensor.shape(), &[4, 3, 640, 480]);
        assert_eq!(set.inputs[1].tensor.shape(), &[4]);
    }

    #[test]
    fn random_values_are_seeded_and_in_range() {
        let specs = [
            spec("f", DatumType::F32, vec![Dim::Fixed(1000)]),
            spec("h", DatumType::F16, vec![Dim::Fixed(10)]),
            spec("i", DatumType::I64, vec![Dim::Fixed(1000)]),
            spec("b", DatumType::Bool, vec![Dim::Fixed(3)]),
        ];

        let first = build_inputs_for_specs("m", &specs, &InputRequest::default()).unwrap();
        let second = build_inputs_for_specs("m", &specs, &InputRequest::default()).unwrap();
        let reseeded = build_inputs_for_specs(
            "m",
            &specs,
            &InputRequest {
                seed: 7,
                ..Default::default()
            },
        )
        .unwrap();

        let floats = first.inputs[0].tensor.to_plain_array_view::<f32>().unwrap();
        let ints = first.inputs[2].tensor.to_plain_array_view::<i64>().unwrap();
        assert!(floats.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert!(floats.iter().any(|v| *v < -0.5) && floats.iter().any(|v| *v > 0.5));
        assert!(ints.iter().all(|v| (0..4).contains(v)));
        assert!((0..4).all(|wanted| ints.iter().any(|v| *v == wanted)));
        assert_eq!(first.inputs[1].tensor.datum_type(), DatumType::F16);
        assert_eq!(first.inputs[3].tensor, tensor1(&[true, true, true]));
        assert_eq!(first.inputs[0].tensor, second.inputs[0].tensor);
        assert_ne!(first.inputs[0].tensor, reseeded.inputs[0].tensor);
    }

    #[test]
    fn random_values_are_stable_across_versions() {
        // Guards against an accidental change of the generator, which would change every report.
        let specs = [spec("x", DatumType::F64, vec![Dim::Fixed(2)])];

        let set = build_inputs_for_specs("m", &specs, &InputRequest::default()).unwrap();

        let values: Vec<f64> = set.inputs[0]
            .tensor
            .to_plain_array_view::<f64>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        let mut rng = SplitMix64::new(DEFAULT_SEED ^ fnv1a(b"x"));
        assert_eq!(values, [rng.next_signed_unit(), rng.next_signed_unit()]);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn unknown_input_name_is_rejected() {
        let specs = [image_spec()];
        let request = InputRequest {
            tensors: vec![given("imgs", tensor1(&[1.0f32]))],
            ..Default::default()
        };

        let err = build_inputs_for_specs("original", &specs, &request).unwrap_err();

        assert!(matches!(err, InputError::UnknownInput { .. }), "{err}");
        assert!(err.to_string().contains("`imgs`"), "{err}");
        assert!(err.to_string().contains("its inputs are: images"), "{err}");
    }

    #[test]
    fn fixed_dim_mismatch_is_rejected() {
        let specs = [image_spec()];
        let request = InputRequest {
            shapes: vec!["images=1,4,8,8".parse().unwrap()],
            ..Default::default()
        };

        let err = build_inputs_for_specs("m", &specs, &request).unwrap_err();

        assert!(
            matches!(
                err,
                InputError::DimMismatch {
                    axis: 1,
                    expected: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rank_mismatch_is_rejected() {
        let specs = [image_spec()];
        let request = InputRequest {
            tensors: vec![given("images", Tensor::zero::<f32>(&[3, 8, 8]).unwrap())],
            ..Default::default()
        };

        let err = build_inputs_for_specs("m", &specs, &request).unwrap_err();

        assert!(
            matches!(err, InputError::RankMismatch { expected: 4, .. }),
            "{err}"
        );
    }

    #[test]
    fn symbol_conflict_is_rejected() {
        let specs = [
            image_spec(),
            spec("scale", DatumType::F32, vec![sym("batch")]),
        ];
        let request = InputRequest {
            tensors: vec![given("images", Tensor::zero::<f32>(&[2, 3, 8, 8]).unwrap())],
            shapes: vec!["scale=3".parse().unwrap()],
            ..Default::default()
        };

        let err = build_inputs_for_specs("m", &specs, &request).unwrap_err();

        assert!(
            matches!(
                err,
                InputError::SymbolConflict {
                    first_value: 2,
                    second_value: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn type_mismatch_is_rejected() {
        let specs = [image_spec()];
        let request = InputRequest {
            tensors: vec![given("images", Tensor::zero::<f64>(&[1, 3, 8, 8]).unwrap())],
            ..Default::default()
        };

        let err = build_inputs_for_specs("m", &specs, &request).unwrap_err();

        assert!(
            err.to_string()
                .contains("is f64, but the model expects f32"),
            "{err}"
        );
    }

    #[test]
    fn override_conflicting_with_tensor_is_rejected() {
        let specs = [image_spec()];
        let request = InputRequest {
            tensors: vec![given("images", Tensor::zero::<f32>(&[1, 3, 8, 8]).unwrap())],
            shapes: vec!["images=1,3,16,16".parse().unwrap()],
            ..Default::default()
        };

        let err = build_inputs_for_specs("m", &specs, &request).unwrap_err();

        assert!(matches!(err, InputError::OverrideConflict { .. }), "{err}");
    }

    #[test]
    fn duplicate_override_is_rejected() {
        let specs = [image_spec()];
        let request = InputRequest {
            shapes: vec![
                "images=1,3,8,8".parse().unwrap(),
                "images=1,3,8,8".parse().unwrap(),
            ],
            ..Default::default()
        };

        let err = build_inputs_for_specs("m", &specs, &request).unwrap_err();

        assert!(
            matches!(
                err,
                InputError::DuplicateInput {
                    origin: ShapeOrigin::ShapeOverride,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn overflowing_shape_is_rejected() {
        let specs = [spec("x", DatumType::F32, vec![Dim::Unknown, Dim::Unknown])];
        let huge = format!("x={},{}", usize::MAX / 2, 3);
        let request = InputRequest {
            shapes: vec![huge.parse().unwrap()],
            ..Default::default()
        };

        let err = build_inputs_for_specs("m", &specs, &request).unwrap_err();

        assert!(matches!(err, InputError::ShapeTooLarge { .. }), "{err}");
    }

    #[test]
    fn shape_over_input_limit_rejected() {
        // 2^31 float32 elements take 8 GiB: the shape fits in memory
        // arithmetic but is over MAX_INPUT_BYTES.
        let specs = [spec("x", DatumType::F32, vec![Dim::Unknown, Dim::Unknown])];
        let request = InputRequest {
            shapes: vec![format!("x=8,{}", 1u64 << 28).parse().unwrap()],
            ..Default::default()
        };

        let err = build_inputs_for_specs("m", &specs, &request).unwrap_err();

        assert!(matches!(err, InputError::ShapeTooLarge { .. }), "{err}");
        assert!(err.to_string().contains("2 GiB"), "{err}");
    }

    #[test]
    fn shapeless_input_needs_a_shape() {
        let specs = [InputSpec {
            name: "x".into(),
            datum_type: DatumType::F32,
            dims: None,
        }];

        let err = build_inputs_for_specs("m", &specs, &InputRequest::default()).unwrap_err();
        let with_override = build_inputs_for_specs(
            "m",
            &specs,
            &InputRequest {
                shapes: vec!["x=2,2".parse().unwrap()],
                ..Default::default()
            },
        )
        .unwrap();

        assert!(matches!(err, InputError::MissingShape { .. }), "{err}");
        assert_eq!(with_override.inputs[0].tensor.shape(), &[2, 2]);
    }

    #[test]
    fn shape_override_parsing() {
        let parsed: ShapeOverride = "a=b=1, 2,3".parse().unwrap();

        assert_eq!(
            parsed,
            ShapeOverride {
                input: "a=b".into(),
                shape: vec![1, 2, 3]
            }
        );
        assert!("x".parse::<ShapeOverride>().is_err());
        assert!("=1,2".parse::<ShapeOverride>().is_err());
        assert!("x=".parse::<ShapeOverride>().is_err());
        assert!("x=1,-2".parse::<ShapeOverride>().is_err());
        assert!("x=1,,2".parse::<ShapeOverride>().is_err());
    }

    #[test]
    fn input_set_serializes_summary() {
        let specs = [spec("x", DatumType::I32, vec![sym("n")])];
        let set = build_inputs_for_specs(
            "m",
            &specs,
            &InputRequest {
                seed: 5,
                ..Default::default()
            },
        )
        .unwrap();

        let json = serde_json::to_value(&set).unwrap();

        let expected = serde_json::json!({
            "seed": 5,
            "inputs": [{"name": "x", "element_type": "i32", "shape": [1], "origin": "random"}],
            "chosen_defaults": [{"dim": "n", "value": 1}],
        });
        assert_eq!(json, expected);
    }
}
