//! Reading tensors stored as ONNX external data, and keeping the data files
//! reachable when the folded model is written to another directory.
//!
//! A location must be a relative path that stays inside the model's
//! directory, also after symlinks are resolved: a model must not make
//! onnx-fold read arbitrary files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::onnx::tensor_proto::DataLocation;
use crate::onnx::{GraphProto, ModelProto, TensorProto};

/// Resolves external data locations against the directory of a model.
#[derive(Clone, Debug)]
pub struct ExternalData {
    model_dir: Option<PathBuf>,
}

/// The `external_data` entries of one tensor.
struct Reference {
    location: String,
    offset: u64,
    length: Option<u64>,
}

impl ExternalData {
    /// Creates a resolver for a model read from `model_dir`.
    pub fn new(model_dir: &Path) -> Self {
        ExternalData {
            model_dir: Some(model_dir.to_path_buf()),
        }
    }

    /// Creates a resolver for a model without a directory, for which every external tensor is an error.
    pub fn none() -> Self {
        ExternalData { model_dir: None }
    }

    /// Reads the bytes of an external tensor, `expected_len` being what its dims need
    /// (`None` when that overflows).
    pub fn read(&self, tensor: &TensorProto, expected_len: Option<usize>) -> Result<Vec<u8>> {
        let reference = parse_reference(tensor)?;
        let path = self.resolve(tensor, &reference.location)?;
        let mut file = File::open(&path).map_err(|error| fail(tensor, format!("cannot open {}: {error}", path.display())))?;
        let file_len = file
            .metadata()
            .map_err(|error| fail(tensor, format!("cannot read metadata of {}: {error}", path.display())))?
            .len();

        let expected_len = expected_len
            .and_then(|len| u64::try_from(len).ok())
            .ok_or_else(|| fail(tensor, format!("dims {:?} overflow the element count", tensor.dims)))?;
        let length = reference.length.unwrap_or(expected_len);
        if length != expected_len {
            return Err(fail(tensor, format!("length {length} does not match the {expected_len} bytes its dims need")));
        }
        let end = reference.offset.checked_add(length);
        if end.is_none_or(|end| end > file_len) {
            return Err(fail(
                tensor,
                format!(
                    "offset {} + length {length} is beyond the end of {} ({file_len} bytes)",
                    reference.offset,
                    path.display()
                ),
            ));
        }

        let mut bytes = vec![0; expected_len as usize];
        file.seek(SeekFrom::Start(reference.offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|error| fail(tensor, format!("cannot read {}: {error}", path.display())))?;
        Ok(bytes)
    }

    /// Checks a location and returns the data file's canonical path, which
    /// must be inside the model directory.
    pub(crate) fn resolve(&self, tensor: &TensorProto, location: &str) -> Result<PathBuf> {
        let model_dir = self
            .model_dir
            .as_ref()
            .ok_or_else(|| fail(tensor, "the model was not read from a file, so its data file cannot be found".to_string()))?;

        let relative = check_location(tensor, location)?;
        let path = model_dir.join(relative);
        let canonical_dir = model_dir
            .canonicalize()
            .map_err(|error| fail(tensor, format!("cannot resolve {}: {error}", model_dir.display())))?;
        let canonical = path
            .canonicalize()
            .map_err(|error| fail(tensor, format!("data file {} not found: {error}", path.display())))?;
        if !canonical.starts_with(&canonical_dir) {
            return Err(fail(
                tensor,
                format!("location '{location}' resolves to {}, outside the model directory", canonical.display()),
            ));
        }
        Ok(canonical)
    }
}

/// Rejects absolute locations and locations with `..`, the forms that escape
/// the model directory before any symlink is followed.
pub fn check_location<'a>(tensor: &TensorProto, location: &'a str) -> Result<&'a Path> {
    let path = Path::new(location);
    if location.is_empty() {
        return Err(fail(tensor, "the location is empty".to_string()));
    }
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(fail(tensor, format!("location '{location}' contains '..'; it must stay inside the model directory")))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(fail(tensor, format!("location '{location}' is absolute; it must be relative to the model directory")))
            }
        }
    }
    Ok(path)
}

fn parse_reference(tensor: &TensorProto) -> Result<Reference> {
    let mut location = None;
    let mut offset = 0;
    let mut length = None;

    for entry in &tensor.external_data {
        let value = entry.value();
        match entry.key() {
            "location" => location = Some(value.to_string()),
            "offset" => offset = parse_u64(tensor, "offset", value)?,
            "length" => length = Some(parse_u64(tensor, "length", value)?),
            _ => {}
        }
    }

    let location = location.ok_or_else(|| fail(tensor, "it has no 'location' entry".to_string()))?;
    Ok(Reference { location, offset, length })
}

fn parse_u64(tensor: &TensorProto, key: &str, value: &str) -> Result<u64> {
    value
        .parse()
        .map_err(|_| fail(tensor, format!("'{key}' is '{value}', not a non-negative integer")))
}

/// Returns the distinct data file locations that a model's tensors reference.
pub fn locations(model: &ModelProto) -> BTreeSet<String> {
    tensors_by_location(model).into_keys().collect()
}

/// Returns the distinct data file locations that a model's tensors
/// reference, each with the name of the first tensor stored there.
pub fn tensors_by_location(model: &ModelProto) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    if let Some(graph) = &model.graph {
        collect_locations(graph, &mut found);
    }
    found
}

fn collect_locations(graph: &GraphProto, found: &mut BTreeMap<String, String>) {
    let constant_tensors = graph
        .node
        .iter()
        .flat_map(|node| &node.attribute)
        .flat_map(|attribute| attribute.t.iter().chain(&attribute.tensors));
    for tensor in graph.initializer.iter().chain(constant_tensors) {
        if tensor.data_location() != DataLocation::External {
            continue;
        }
        let location = tensor.external_data.iter().find(|entry| entry.key() == "location");
        if let Some(entry) = location {
            found.entry(entry.value().to_string()).or_insert_with(|| tensor.name().to_string());
        }
    }

    for node in &graph.node {
        for attribute in &node.attribute {
            for subgraph in attribute.g.iter().chain(&attribute.graphs) {
                collect_locations(subgraph, found);
            }
        }
    }
}

fn fail(tensor: &TensorProto, reason: String) -> Error {
    Error::ExternalData {
        tensor: tensor.name().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::StringStringEntryProto;

    fn external_tensor(location: &str, offset: &str, length: &str) -> TensorProto {
        let entry = |key: &str, value: &str| StringStringEntryProto {
            key: Some(key.to_string()),
            value: Some(value.to_string()),
        };
        TensorProto {
            name: Some("w".to_string()),
            dims: vec![2],
            data_type: Some(1),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![entry("location", location), entry("offset", offset), entry("length", length)],
            ..Default::default()
        }
    }

    #[test]
    fn reads_within_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data.bin"), [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();

        let bytes = ExternalData::new(dir.path()).read(&external_tensor("data.bin", "2", "8"), Some(8)).unwrap();

        assert_eq!(bytes, vec![2, 3, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn rejects_read_past_end() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data.bin"), [0u8; 8]).unwrap();

        let error = ExternalData::new(dir.path())
            .read(&external_tensor("data.bin", "4", "8"), Some(8))
            .unwrap_err()
            .to_string();

        assert!(error.contains("tensor 'w'"), "{error}");
        assert!(error.contains("beyond the end"), "{error}");
    }

    #[test]
    fn rejects_parent_and_absolute_locations() {
        let dir = tempfile::tempdir().unwrap();
        let external = ExternalData::new(dir.path());

        let parent = external.read(&external_tensor("../data.bin", "0", "8"), Some(8)).unwrap_err();
        let absolute = external.read(&external_tensor("/etc/passwd", "0", "8"), Some(8)).unwrap_err();

        assert!(parent.to_string().contains("'..'"), "{parent}");
        assert!(absolute.to_string().contains("absolute"), "{absolute}");
    }

    #[cfg(unix)]
    #[test]
    fn rejects_symlink_out_of_directory() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.bin"), [0u8; 8]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.bin"), dir.path().join("data.bin")).unwrap();

        let error = ExternalData::new(dir.path())
            .read(&external_tensor("data.bin", "0", "8"), Some(8))
            .unwrap_err()
            .to_string();

        assert!(error.contains("outside the model directory"), "{error}");
    }

    #[test]
    fn missing_data_file_names_tensor() {
        let dir = tempfile::tempdir().unwrap();

        let error = ExternalData::new(dir.path())
            .read(&external_tensor("absent.bin", "0", "8"), Some(8))
            .unwrap_err()
            .to_string();

        assert!(error.contains("tensor 'w'"), "{error}");
        assert!(error.contains("not found"), "{error}");
    }
}
