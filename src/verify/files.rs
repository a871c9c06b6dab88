//! Reading of input tensors that the user already has on disk.
//!
//! Accepted forms of an input argument:
//! - `NAME=FILE.npy`: one array for input `NAME`.
//! - `NAME=FILE.npz`: the array named `NAME` in the archive, or its only array.
//! - `NAME=FILE.pb`: an ONNX `TensorProto`, whose own name is then ignored.
//! - `FILE.npz`: every array of the archive, each for the input of the same name.
//! - `FILE.pb`: an ONNX `TensorProto` for the input named in the proto.
//! - `DIR`: the ONNX backend test layout, `DIR/test_data_set_N/input_K.pb` and
//!   `output_K.pb`, or a `test_data_set_N` directory itself.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tract_onnx::data_resolver::MmapDataResolver;
use tract_onnx::pb::TensorProto;
use tract_onnx::prelude::*;

use super::load::{call_tract, datum_type_from_onnx, onnx_type_name, LoadedModel};
use super::npy::{decode_npy, read_npy};
use super::NamedTensor;

/// Prefix of the data set directories in the ONNX backend test layout.
const TEST_DATA_SET_PREFIX: &str = "test_data_set_";

/// Failure to read an input file given by the user.
#[derive(Debug, thiserror::Error)]
pub enum InputFileError {
    /// The argument has an empty input name or path.
    #[error("invalid input argument `{text}`: expected NAME=FILE, FILE.npz, FILE.pb or a test data directory")]
    InvalidArgument { text: String },

    /// The file or directory does not exist.
    #[error("input file {} not found; check the path", .path.display())]
    NotFound { path: PathBuf },

    /// The file exists but could not be read.
    #[error("failed to read input file {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not valid in the format its extension names.
    #[error("input file {} is not a valid {format} file: {reason}", .path.display())]
    Invalid {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },

    /// An array inside an `.npz` archive could not be decoded.
    #[error("array `{array}` in {} is invalid: {reason}", .path.display())]
    InvalidArray {
        path: PathBuf,
        array: String,
        reason: String,
    },

    /// `NAME=FILE.npz` where the archive has several arrays and none is named `NAME`.
    #[error("{} has no array named `{input}` but several others ({}); name the array after the input", .path.display(), .available.join(", "))]
    NpzArrayNotFound {
        path: PathBuf,
        input: String,
        available: Vec<String>,
    },

    /// A file without a name for its tensor, given without `NAME=`.
    #[error("{} does not name the input its tensor is for; pass it as NAME={}", .path.display(), .path.display())]
    UnnamedTensor { path: PathBuf },

    /// A `TensorProto` of an element type that tract cannot run.
    #[error("{} has element type {data_type}; tract 0.23 accepts bool, integer, float16, float32 and float64 tensors", .path.display())]
    UnsupportedTensorType { path: PathBuf, data_type: String },

    /// A file whose extension is not `.npy`, `.npz` or `.pb`, or a directory given with `NAME=`.
    #[error("{} is not an .npy, .npz or .pb file{}", .path.display(), if *.named { "" } else { " nor a test data directory" })]
    UnsupportedFile { path: PathBuf, named: bool },

    /// A directory without `input_K.pb` files nor `test_data_set_N` directories.
    #[error("directory {} has neither input_K.pb files nor test_data_set_N directories", .path.display())]
    NoTestData { path: PathBuf },

    /// A backend test file whose position `K` is past the model's inputs or outputs.
    #[error("{} is {kind} {index} of its test data set, but model `{model}` has only {count} {kind}s", .path.display())]
    PositionOutOfRange {
        path: PathBuf,
        kind: &'static str,
        index: usize,
        count: usize,
        model: String,
    },

    /// Two arguments provide the same input.
    #[error("input `{input}` is given twice, by {} and by {}; keep one", .first.display(), .second.display())]
    DuplicateInput {
        input: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// One input argument as written on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputArg {
    /// `NAME=FILE`: the tensor in `FILE` for the input `NAME`.
    Named { input: String, path: PathBuf },

    /// `FILE` or `DIR`: tensors named by the file itself.
    Unnamed { path: PathBuf },
}

impl FromStr for InputArg {
    type Err = InputFileError;

    /// Parses `NAME=FILE` or a bare path.
    ///
    /// An argument that names an existing path is a bare path even when it
    /// contains `=`. Otherwise it is split at its first `=`.
    fn from_str(text: &str) -> Result<InputArg, InputFileError> {
        let invalid = || InputFileError::InvalidArgument {
            text: text.to_string(),
        };
        if text.is_empty() {
            return Err(invalid());
        }

        if Path::new(text).exists() {
            return Ok(InputArg::Unnamed {
                path: PathBuf::from(text),
            });
        }

        match text.split_once('=') {
            Some((input, path)) if !input.is_empty() && !path.is_empty() => Ok(InputArg::Named {
                input: input.to_string(),
                path: PathBuf::from(path),
            }),
            Some(_) => Err(invalid()),
            None => Ok(InputArg::Unnamed {
                path: PathBuf::from(text),
            }),
        }
    }
}

/// Tensors read from the user's files: inputs, and the expected outputs of a backend test directory.
#[derive(Clone, Debug, Default)]
pub struct UserTensors {
    /// Input tensors, named after the model inputs they are for.
    pub inputs: Vec<NamedTensor>,

    /// Expected outputs found as `output_K.pb` in a backend test directory.
    pub expected_outputs: Vec<NamedTensor>,

    /// The test data set directory the expected outputs come from.
    pub expected_outputs_dir: Option<PathBuf>,
}

/// Reads every input argument, naming positional backend test files after `model`'s inputs and outputs.
///
/// Names are not checked against the model here: [`super::build_inputs`]
/// rejects an input name that the model does not have.
pub fn read_input_args(
    model: &LoadedModel,
    args: &[InputArg],
) -> Result<UserTensors, InputFileError> {
    let input_names: Vec<String> = model
        .input_specs()
        .iter()
        .map(|spec| spec.name.clone())
        .collect();
    let mut tensors = UserTensors::default();
    let mut sources: BTreeMap<String, PathBuf> = BTreeMap::new();

    for arg in args {
        let (path, read) = match arg {
            InputArg::Named { input, path } => (
                path,
                UserTensors {
                    inputs: vec![read_named(input, path)?],
                    ..Default::default()
                },
            ),
            InputArg::Unnamed { path } if path.is_dir() => (
                path,
                read_test_data_dir(path, model.label(), &input_names, model.output_names())?,
            ),
            InputArg::Unnamed { path } => (
                path,
                UserTensors {
                    inputs: read_unnamed(path)?,
                    ..Default::default()
                },
            ),
        };

        for input in read.inputs {
            if let Some(first) = sources.insert(input.name.clone(), path.clone()) {
                return Err(InputFileError::DuplicateInput {
                    input: input.name,
                    first,
                    second: path.clone(),
                });
            }
            tensors.inputs.push(input);
        }
        if read.expected_outputs_dir.is_some() {
            tensors.expected_outputs = read.expected_outputs;
            tensors.expected_outputs_dir = read.expected_outputs_dir;
        }
    }
    Ok(tensors)
}

/// Reads the tensor in `path` for the input `input`.
pub fn read_named(input: &str, path: &Path) -> Result<NamedTensor, InputFileError> {
    let named = |tensor| NamedTensor {
        name: input.to_string(),
        tensor,
    };

    match extension(path).as_deref() {
        Some("npy") => read_npy_file(path).map(named),
        Some("npz") => read_npz_array_for(input, path),
        Some("pb") => read_tensor_proto(path).map(|(_, tensor)| named(tensor)),
        _ => Err(missing_or(
            path,
            InputFileError::UnsupportedFile {
                path: path.to_path_buf(),
                named: true,
            },
        )),
    }
}

/// Reads the tensors of an `.npz` or `.pb` file, named by the file itself.
pub fn read_unnamed(path: &Path) -> Result<Vec<NamedTensor>, InputFileError> {
    match extension(path).as_deref() {
        Some("npz") => read_npz_all(path),
        Some("pb") => {
            let (name, tensor) = read_tensor_proto(path)?;
            if name.is_empty() {
                return Err(InputFileError::UnnamedTensor {
                    path: path.to_path_buf(),
                });
            }
            Ok(vec![NamedTensor { name, tensor }])
        }
        Some("npy") => Err(missing_or(
            path,
            InputFileError::UnnamedTensor {
                path: path.to_path_buf(),
            },
        )),
        _ => Err(missing_or(
            path,
            InputFileError::UnsupportedFile {
                path: path.to_path_buf(),
                named: false,
            },
        )),
    }
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .map(|ext| ext.to_string_lossy().to_ascii_lowercase())
}

/// Prefers `NotFound` over a format error when the path does not exist.
fn missing_or(path: &Path, err: InputFileError) -> InputFileError {
    if path.exists() {
        err
    } else {
        InputFileError::NotFound {
            path: path.to_path_buf(),
        }
    }
}

fn open(path: &Path) -> Result<BufReader<File>, InputFileError> {
    match File::open(path) {
        Ok(file) => Ok(BufReader::new(file)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(InputFileError::NotFound {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(InputFileError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_npy_file(path: &Path) -> Result<Tensor, InputFileError> {
    let reader = open(path)?;
    read_npy(reader).map_err(|reason| InputFileError::Invalid {
        path: path.to_path_buf(),
        format: ".npy",
        reason,
    })
}

fn open_npz(path: &Path) -> Result<npyz::npz::NpzArchive<BufReader<File>>, InputFileError> {
    let reader = open(path)?;
    npyz::npz::NpzArchive::new(reader).map_err(|err| InputFileError::Invalid {
        path: path.to_path_buf(),
        format: ".npz",
        reason: err.to_string(),
    })
}

fn read_npz_array(
    archive: &mut npyz::npz::NpzArchive<BufReader<File>>,
    path: &Path,
    array: &str,
) -> Result<Tensor, InputFileError> {
    let invalid = |reason: String| InputFileError::InvalidArray {
        path: path.to_path_buf(),
        array: array.to_string(),
        reason,
    };

    let npy = archive
        .by_name(array)
        .map_err(|err| invalid(err.to_string()))?;
    let npy =
        npy.ok_or_else(|| invalid("the archive lists it but it cannot be opened".to_string()))?;
    decode_npy(npy).map_err(invalid)
}

/// Lists the array names of an archive, sorted because zip 0.6 lists them in hash order.
fn npz_array_names(archive: &npyz::npz::NpzArchive<BufReader<File>>) -> Vec<String> {
    let mut names: Vec<String> = archive.array_names().map(str::to_string).collect();
    names.sort();
    names
}

fn read_npz_array_for(input: &str, path: &Path) -> Result<NamedTensor, InputFileError> {
    let mut archive = open_npz(path)?;
    let names = npz_array_names(&archive);

    let array = if names.iter().any(|name| name == input) {
        input.to_string()
    } else if let [only] = names.as_slice() {
        only.clone()
    } else {
        return Err(InputFileError::NpzArrayNotFound {
            path: path.to_path_buf(),
            input: input.to_string(),
            available: names,
        });
    };

    let tensor = read_npz_array(&mut archive, path, &array)?;
    Ok(NamedTensor {
        name: input.to_string(),
        tensor,
    })
}

fn read_npz_all(path: &Path) -> Result<Vec<NamedTensor>, InputFileError> {
    let mut archive = open_npz(path)?;
    let names = npz_array_names(&archive);

    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let tensor = read_npz_array(&mut archive, path, &name)?;
        tensors.push(NamedTensor { name, tensor });
    }
    Ok(tensors)
}

/// Reads an ONNX `TensorProto` file and returns the name stored in it with the tensor.
///
/// External data of the tensor is looked up next to the file.
pub fn read_tensor_proto(path: &Path) -> Result<(String, Tensor), InputFileError> {
    let invalid = |reason: String| InputFileError::Invalid {
        path: path.to_path_buf(),
        format: "TensorProto (.pb)",
        reason,
    };

    let reader = open(path)?;
    let proto: TensorProto = tract_onnx::tensor::proto_from_reader(reader)
        .map_err(|err| invalid(super::tract_error_line(&err)))?;

    // tract's loader panics on raw string data, so unsupported types are rejected before it runs.
    if datum_type_from_onnx(proto.data_type).is_none() {
        return Err(InputFileError::UnsupportedTensorType {
            path: path.to_path_buf(),
            data_type: onnx_type_name(proto.data_type),
        });
    }

    let dir = path.parent().map(|dir| dir.to_string_lossy().into_owned());
    let tensor =
        call_tract(|| tract_onnx::tensor::load_tensor(&MmapDataResolver, &proto, dir.as_deref()))
            .map_err(invalid)?;
    Ok((proto.name, tensor))
}

/// Reads an ONNX backend test directory: `input_K.pb` and, when present, `output_K.pb`.
///
/// `dir` is either a `test_data_set_N` directory or its parent, in which case
/// the lowest `N` is used. A tensor is matched to a model input or output by
/// its stored name when that name is one of the model's, else by its position `K`.
pub fn read_test_data_dir(
    dir: &Path,
    model: &str,
    input_names: &[String],
    output_names: &[String],
) -> Result<UserTensors, InputFileError> {
    let data_set = find_data_set(dir)?;
    log::debug!("reading backend test data from {}", data_set.display());

    let inputs = read_numbered_protos(&data_set, "input", model, input_names)?;
    let expected_outputs = read_numbered_protos(&data_set, "output", model, output_names)?;
    let expected_outputs_dir = if expected_outputs.is_empty() {
        None
    } else {
        Some(data_set)
    };

    Ok(UserTensors {
        inputs,
        expected_outputs,
        expected_outputs_dir,
    })
}

fn find_data_set(dir: &Path) -> Result<PathBuf, InputFileError> {
    if !numbered_files(dir, "input")?.is_empty() {
        return Ok(dir.to_path_buf());
    }

    let mut data_sets: Vec<(usize, PathBuf)> = list_dir(dir)?
        .into_iter()
        .filter(|path| path.is_dir())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let index = name.strip_prefix(TEST_DATA_SET_PREFIX)?.parse().ok()?;
            Some((index, path))
        })
        .collect();
    data_sets.sort();

    if data_sets.len() > 1 {
        log::info!(
            "{} contains {} test data sets; only the lowest-numbered one is used",
            dir.display(),
            data_sets.len()
        );
    }
    data_sets
        .into_iter()
        .next()
        .map(|(_, path)| path)
        .ok_or_else(|| InputFileError::NoTestData {
            path: dir.to_path_buf(),
        })
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, InputFileError> {
    let io_error = |source| InputFileError::Io {
        path: dir.to_path_buf(),
        source,
    };

    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        paths.push(entry.map_err(io_error)?.path());
    }
    Ok(paths)
}

/// Lists `{stem}_K.pb` files sorted by `K`.
fn numbered_files(dir: &Path, stem: &str) -> Result<Vec<(usize, PathBuf)>, InputFileError> {
    let prefix = format!("{stem}_");

    let mut files: Vec<(usize, PathBuf)> = list_dir(dir)?
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let index = name
                .strip_prefix(&prefix)?
                .strip_suffix(".pb")?
                .parse()
                .ok()?;
            Some((index, path))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_numbered_protos(
    dir: &Path,
    kind: &'static str,
    model: &str,
    names: &[String],
) -> Result<Vec<NamedTensor>, InputFileError> {
    let mut tensors = Vec::new();

    for (index, path) in numbered_files(dir, kind)? {
        let (stored_name, tensor) = read_tensor_proto(&path)?;
        let name = if names.contains(&stored_name) {
            stored_name
        } else {
            let positional =
                names
                    .get(index)
                    .ok_or_else(|| InputFileError::PositionOutOfRange {
                        path: path.clone(),
                        kind,
                        index,
                        count: names.len(),
                        model: model.to_string(),
                    })?;
            positional.clone()
        };
        tensors.push(NamedTensor { name, tensor });
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use prost::Message;
    use tract_onnx::pb::tensor_proto::DataType;

    use super::*;
    use crate::verify::npy::tests::npy_bytes;
    use crate::verify::test_models::{self, values_f32};

    fn f32_npy(shape: &[usize], values: &[f32]) -> Vec<u8> {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        npy_bytes("<f4", false, shape, &data)
    }

    fn write_npz(path: &Path, arrays: &[(&str, Vec<u8>)]) {
        let file = File::create(path).unwrap();
        let mut zip = npyz::zip::ZipWriter::new(file);
        for (name, bytes) in arrays {
            zip.start_file(
                format!("{name}.npy"),
                npyz::zip::write::FileOptions::default(),
            )
            .unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
    }

    fn write_proto(path: &Path, proto: &TensorProto) {
        std::fs::write(path, proto.encode_to_vec()).unwrap();
    }

    #[test]
    fn arg_parses_named_and_bare_forms() {
        let named: InputArg = "images=/nonexistent/a.npy".parse().unwrap();
        let bare: InputArg = "/nonexistent/data.npz".parse().unwrap();

        assert_eq!(
            named,
            InputArg::Named {
                input: "images".into(),
                path: "/nonexistent/a.npy".into()
            }
        );
        assert_eq!(
            bare,
            InputArg::Unnamed {
                path: "/nonexistent/data.npz".into()
            }
        );
        assert!("=a.npy".parse::<InputArg>().is_err());
        assert!("x=".parse::<InputArg>().is_err());
    }

    #[test]
    fn arg_prefers_existing_path_with_equals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a=b.npz");
        std::fs::write(&path, b"").unwrap();

        let arg: InputArg = path.to_str().unwrap().parse().unwrap();

        assert_eq!(arg, InputArg::Unnamed { path });
    }

    #[test]
    fn named_npy_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, f32_npy(&[1, 2], &[0.25, -4.0])).unwrap();

        let tensor = read_named("x", &path).unwrap();

        assert_eq!(tensor.name, "x");
        assert_eq!(tensor.tensor.shape(), &[1, 2]);
        assert_eq!(values_f32(&tensor.tensor), [0.25, -4.0]);
    }

    #[test]
    fn npz_single_array_takes_given_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.npz");
        write_npz(&path, &[("arr_0", f32_npy(&[2], &[1.0, 2.0]))]);

        let tensor = read_named("images", &path).unwrap();

        assert_eq!(tensor.name, "images");
        assert_eq!(values_f32(&tensor.tensor), [1.0, 2.0]);
    }

    #[test]
    fn npz_several_arrays_match_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.npz");
        write_npz(
            &path,
            &[("a", f32_npy(&[1], &[1.0])), ("b", f32_npy(&[1], &[2.0]))],
        );

        let all = read_unnamed(&path).unwrap();
        let b = read_named("b", &path).unwrap();
        let missing = read_named("c", &path).unwrap_err();

        let names: Vec<&str> = all.iter().map(|tensor| tensor.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(values_f32(&b.tensor), [2.0]);
        assert!(
            matches!(missing, InputFileError::NpzArrayNotFound { ref available, .. } if available.len() == 2),
            "{missing}"
        );
    }

    #[test]
    fn pb_is_read_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pb");
        write_proto(&path, &test_models::float_tensor("x", &[2, 1], &[3.0, 5.0]));

        let unnamed = read_unnamed(&path).unwrap();
        let renamed = read_named("other", &path).unwrap();

        assert_eq!(unnamed[0].name, "x");
        assert_eq!(unnamed[0].tensor.shape(), &[2, 1]);
        assert_eq!(values_f32(&unnamed[0].tensor), [3.0, 5.0]);
        assert_eq!(renamed.name, "other");
    }

    #[test]
    fn pb_reads_raw_int64_and_f16() {
        let dir = tempfile::tempdir().unwrap();
        let ints_path = dir.path().join("ints.pb");
        let halves_path = dir.path().join("halves.pb");
        let ints = TensorProto {
            name: "ids".into(),
            dims: vec![3],
            data_type: DataType::Int64 as i32,
            raw_data: [5i64, -1, 9].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        };
        let halves = TensorProto {
            name: "h".into(),
            dims: vec![2],
            data_type: DataType::Float16 as i32,
            raw_data: [f16::from_f32(1.5), f16::from_f32(-0.5)]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            ..Default::default()
        };
        write_proto(&ints_path, &ints);
        write_proto(&halves_path, &halves);

        let (_, ints_tensor) = read_tensor_proto(&ints_path).unwrap();
        let (_, halves_tensor) = read_tensor_proto(&halves_path).unwrap();

        assert_eq!(ints_tensor, tensor1(&[5i64, -1, 9]));
        assert_eq!(
            halves_tensor,
            tensor1(&[f16::from_f32(1.5), f16::from_f32(-0.5)])
        );
    }

    #[test]
    fn pb_rejects_string_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.pb");
        let strings = TensorProto {
            name: "s".into(),
            dims: vec![1],
            data_type: DataType::String as i32,
            raw_data: b"abc".to_vec(),
            ..Default::default()
        };
        write_proto(&path, &strings);

        let err = read_tensor_proto(&path).unwrap_err();

        assert!(
            matches!(err, InputFileError::UnsupportedTensorType { ref data_type, .. } if data_type == "STRING"),
            "{err}"
        );
    }

    #[test]
    fn pb_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pb");
        std::fs::write(&path, b"\xff\xff\xff garbage").unwrap();

        let err = read_tensor_proto(&path).unwrap_err();

        assert!(matches!(err, InputFileError::Invalid { .. }), "{err}");
    }

    #[test]
    fn backend_dir_matches_by_name_then_position() {
        let dir = tempfile::tempdir().unwrap();
        let data_set = dir.path().join("test_data_set_0");
        std::fs::create_dir(&data_set).unwrap();
        std::fs::create_dir(dir.path().join("test_data_set_1")).unwrap();
        write_proto(
            &data_set.join("input_0.pb"),
            &test_models::float_tensor("b", &[1], &[2.0]),
        );
        write_proto(
            &data_set.join("input_1.pb"),
            &test_models::float_tensor("", &[1], &[1.0]),
        );
        write_proto(
            &data_set.join("output_0.pb"),
            &test_models::float_tensor("", &[1], &[3.0]),
        );
        let inputs = ["a".to_string(), "b".to_string()];

        let read = read_test_data_dir(dir.path(), "m", &inputs, &["y".to_string()]).unwrap();

        let names: Vec<&str> = read
            .inputs
            .iter()
            .map(|tensor| tensor.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["b", "b"],
            "stored name wins for input_0, position names input_1"
        );
        assert_eq!(read.expected_outputs[0].name, "y");
        assert_eq!(values_f32(&read.expected_outputs[0].tensor), [3.0]);
        assert_eq!(read.expected_outputs_dir, Some(data_set));
    }

    #[test]
    fn backend_dir_position_past_inputs_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write_proto(
            &dir.path().join("input_3.pb"),
            &test_models::float_tensor("", &[1], &[1.0]),
        );

        let err = read_test_data_dir(dir.path(), "m", &["a".to_string()], &[]).unwrap_err();

        assert!(
            matches!(
                err,
                InputFileError::PositionOutOfRange {
                    index: 3,
                    count: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn empty_dir_has_no_test_data() {
        let dir = tempfile::tempdir().unwrap();

        let err = read_test_data_dir(dir.path(), "m", &[], &[]).unwrap_err();

        assert!(matches!(err, InputFileError::NoTestData { .. }), "{err}");
    }

    #[test]
    fn missing_file_is_not_found() {
        let err = read_named("x", Path::new("/nonexistent/dir/x.npy")).unwrap_err();
        let unnamed_err = read_unnamed(Path::new("/nonexistent/dir/x.bin")).unwrap_err();

        assert!(matches!(err, InputFileError::NotFound { .. }), "{err}");
        assert!(
            matches!(unnamed_err, InputFileError::NotFound { .. }),
            "{unnamed_err}"
        );
        assert!(err.to_string().contains("/nonexistent/dir/x.npy"), "{err}");
    }

    #[test]
    fn unnamed_npy_asks_for_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, f32_npy(&[1], &[1.0])).unwrap();

        let err = read_unnamed(&path).unwrap_err();

        assert!(matches!(err, InputFileError::UnnamedTensor { .. }), "{err}");
        assert!(err.to_string().contains("NAME="), "{err}");
    }
}
