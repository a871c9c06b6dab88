//! Loading a model from a file and saving it atomically.
//!
//! Loading reads the whole file into one buffer and decodes it with prost,
//! whose `Bytes` fields then point into that buffer, so weights are not copied.
//! Saving writes a temporary file in the output's directory, syncs it and
//! renames it over the output: a crash leaves the old file or the new one,
//! never a mix, and `onnx-fold m.onnx m.onnx` is safe.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use log::{info, warn};
use prost::Message;

use crate::error::{Error, Result};
use crate::external::{self, ExternalData};
use crate::graph::{node_label, outer_reads, subgraphs};
use crate::onnx::{GraphProto, ModelProto};

/// A model and where it came from.
pub struct Model {
    pub proto: ModelProto,
    /// The file's bytes as read, written back unchanged when nothing was folded.
    pub original: Bytes,
    pub path: PathBuf,
    /// Whether `proto` was changed since it was read.
    pub changed: bool,
}

impl Model {
    /// Encodes the model, or returns the original bytes when nothing changed.
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.changed {
            encode(&self.proto)
        } else {
            self.original.to_vec()
        }
    }

    /// Writes the model to `out` atomically, with its external data files
    /// reachable from `out`'s directory.
    pub fn save(&self, out: &Path) -> Result<()> {
        save(&self.to_bytes(), &self.proto, &self.dir(), out)
    }

    /// Returns the directory that external data locations are relative to.
    pub fn dir(&self) -> PathBuf {
        model_dir(&self.path)
    }

    /// Returns a resolver for this model's external data.
    pub fn external_data(&self) -> ExternalData {
        ExternalData::new(&self.dir())
    }
}

fn model_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reads and decodes a model file, and sorts any graph whose nodes are out of
/// topological order.
pub fn load(path: &Path) -> Result<Model> {
    let metadata = fs::metadata(path).map_err(|error| Error::io("cannot read", path, error))?;
    if metadata.is_dir() {
        return Err(invalid(path, "it is a directory, not a file".to_string()));
    }
    let bytes = fs::read(path).map_err(|error| Error::io("cannot read", path, error))?;
    load_bytes(Bytes::from(bytes), path)
}

/// Decodes a model from bytes; `path` is used for messages and external data.
pub fn load_bytes(bytes: Bytes, path: &Path) -> Result<Model> {
    if bytes.is_empty() {
        return Err(invalid(path, "the file is empty".to_string()));
    }
    let mut proto = ModelProto::decode(bytes.clone()).map_err(|error| invalid(path, decode_failure(&error)))?;

    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| invalid(path, "it has no graph; is it an ONNX model file?".to_string()))?;
    if proto.ir_version.is_none() && proto.opset_import.is_empty() {
        return Err(invalid(path, "it has neither ir_version nor opset_import; is it an ONNX model file?".to_string()));
    }
    sort_graph(graph, &HashSet::new(), "main").map_err(|reason| invalid(path, reason))?;

    Ok(Model {
        proto,
        original: bytes,
        path: path.to_path_buf(),
        changed: false,
    })
}

/// Puts the nodes of a graph and its subgraphs in topological order when they
/// are not, and rejects a cycle. A node with a subgraph depends on the values
/// its subgraph reads from this graph.
fn sort_graph(graph: &mut GraphProto, outer: &HashSet<String>, label: &str) -> std::result::Result<(), String> {
    let mut visible = outer.clone();
    visible.extend(graph.input.iter().map(|value| value.name().to_string()));
    visible.extend(graph.initializer.iter().map(|tensor| tensor.name().to_string()));
    visible.extend(graph.node.iter().flat_map(|node| node.output.iter().cloned()));

    for node in &mut graph.node {
        let node_name = node_label(node);
        for attribute in &mut node.attribute {
            for subgraph in attribute.g.iter_mut().chain(attribute.graphs.iter_mut()) {
                sort_graph(subgraph, &visible, &format!("{label}/{node_name}"))?;
            }
        }
    }

    let order = topological_order(graph, label)?;
    if order.iter().enumerate().any(|(position, &index)| position != index) {
        info!("sorted the nodes of graph {label} into topological order");
        let mut nodes: Vec<Option<_>> = std::mem::take(&mut graph.node).into_iter().map(Some).collect();
        graph.node = order.into_iter().filter_map(|index| nodes[index].take()).collect();
    }
    Ok(())
}

/// Kahn's algorithm, taking the lowest ready index first so that a sorted
/// graph keeps its order.
fn topological_order(graph: &GraphProto, label: &str) -> std::result::Result<Vec<usize>, String> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (index, node) in graph.node.iter().enumerate() {
        for output in node.output.iter().filter(|name| !name.is_empty()) {
            producer.entry(output.as_str()).or_insert(index);
        }
    }

    let count = graph.node.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut pending = vec![0usize; count];
    for (index, node) in graph.node.iter().enumerate() {
        let mut reads: HashSet<String> = node.input.iter().filter(|name| !name.is_empty()).cloned().collect();
        for subgraph in subgraphs(node) {
            reads.extend(outer_reads(subgraph));
        }
        let sources: HashSet<usize> = reads.iter().filter_map(|name| producer.get(name.as_str()).copied()).collect();
        for source in sources {
            if source == index {
                return Err(format!("in graph {label}, node '{}' reads its own output", node_label(&graph.node[index])));
            }
            dependents[source].push(index);
            pending[index] += 1;
        }
    }

    let mut ready: std::collections::BTreeSet<usize> = (0..count).filter(|&index| pending[index] == 0).collect();
    let mut order = Vec::with_capacity(count);
    while let Some(index) = ready.pop_first() {
        order.push(index);
        for &dependent in &dependents[index] {
            pending[dependent] -= 1;
            if pending[dependent] == 0 {
                ready.insert(dependent);
            }
        }
    }

    if order.len() < count {
        let stuck = (0..count).find(|&index| pending[index] > 0).unwrap_or(0);
        return Err(format!(
            "in graph {label}, the nodes form a cycle through node '{}'",
            node_label(&graph.node[stuck])
        ));
    }
    Ok(order)
}

/// Checks that `out` can be written before any work is done: its directory
/// exists, and it is absent or a regular file. The rename that writes `out`
/// would replace a symlink or a device node rather than write through it.
pub fn check_output_path(out: &Path) -> Result<()> {
    let reject = |reason: &str| Err(Error::io("cannot write", out, std::io::Error::other(reason.to_string())));
    if let Ok(metadata) = fs::symlink_metadata(out) {
        if metadata.is_dir() {
            return reject("it is a directory; give a file path");
        }
        if !metadata.file_type().is_file() {
            return reject("it is a symlink or a special file, which the atomic rename would replace; give a regular file path");
        }
    }
    let dir = model_dir(out);
    if !dir.is_dir() {
        return Err(Error::io(
            "cannot write",
            out,
            std::io::Error::other(format!("directory {} does not exist", dir.display())),
        ));
    }
    Ok(())
}

/// Returns true when two paths name the same file, also when `b` does not
/// exist yet but would be created as the file `a` is.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let resolve = |path: &Path| -> Option<PathBuf> {
        if let Ok(canonical) = path.canonicalize() {
            return Some(canonical);
        }
        let dir = model_dir(path).canonicalize().ok()?;
        Some(dir.join(path.file_name()?))
    };
    match (resolve(a), resolve(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Encodes a model to bytes.
pub fn encode(proto: &ModelProto) -> Vec<u8> {
    proto.encode_to_vec()
}

/// Writes `bytes` to `out` atomically and makes the external data files that
/// the model references reachable from `out`'s directory.
pub fn save(bytes: &[u8], proto: &ModelProto, source_dir: &Path, out: &Path) -> Result<()> {
    check_output_path(out)?;
    let out_dir = model_dir(out);
    link_external_data(proto, source_dir, &out_dir)?;
    write_atomically(bytes, out)
}

/// Writes through a temporary file in the same directory, then renames it.
pub fn write_atomically(bytes: &[u8], out: &Path) -> Result<()> {
    replace_atomically(out, |file| file.write_all(bytes))
}

/// Fills a temporary file in `out`'s directory, syncs it, gives it the
/// permissions of the file it replaces, and renames it over `out`.
fn replace_atomically(out: &Path, fill: impl FnOnce(&mut fs::File) -> std::io::Result<()>) -> Result<()> {
    let dir = model_dir(out);
    let mut file = new_temp_file(&dir)?;

    fill(file.as_file_mut())
        .and_then(|_| file.as_file().sync_all())
        .map_err(|error| Error::io("cannot write", file.path(), error))?;
    set_permissions(&file, out)?;

    file.persist(out)
        .map_err(|error| Error::io("cannot rename the temporary file to", out, error.error))?;
    sync_dir(&dir);
    Ok(())
}

/// Creates a temporary file in `dir` for an atomic write. On Unix it is
/// created with mode 0666 less the umask, as a plain new file would be, not the
/// 0600 of temporary files.
fn new_temp_file(dir: &Path) -> Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".onnx-fold-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    builder
        .tempfile_in(dir)
        .map_err(|error| Error::io("cannot create a temporary file in", dir, error))
}

/// Gives the new file the permissions of the file it replaces, if any.
fn set_permissions(file: &tempfile::NamedTempFile, out: &Path) -> Result<()> {
    match fs::metadata(out) {
        Ok(metadata) => fs::set_permissions(file.path(), metadata.permissions())
            .map_err(|error| Error::io("cannot set permissions of", file.path(), error)),
        Err(_) => Ok(()),
    }
}

/// Syncs a directory so the rename itself is durable; best effort.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// Makes every external data file of the model available next to the output.
///
/// In the source directory nothing is needed. Elsewhere each file is copied;
/// an existing file with other content is an error rather than overwritten.
/// A location that leaves the
/// source directory, also through a symlink, is an error, so that a model
/// cannot make onnx-fold copy an arbitrary file. A data file that does not
/// exist is skipped with a warning: the output then refers to it just as
/// the input does.
fn link_external_data(proto: &ModelProto, source_dir: &Path, out_dir: &Path) -> Result<()> {
    let locations = external::tensors_by_location(proto);
    if locations.is_empty() {
        return Ok(());
    }
    let same_dir = match (source_dir.canonicalize(), out_dir.canonicalize()) {
        (Ok(source), Ok(out)) => source == out,
        _ => false,
    };
    if same_dir {
        return Ok(());
    }

    let resolver = ExternalData::new(source_dir);
    for (location, tensor_name) in locations {
        let tensor = crate::onnx::TensorProto {
            name: Some(tensor_name),
            ..Default::default()
        };
        let relative = external::check_location(&tensor, &location)?;
        let source = source_dir.join(relative);
        if !source.exists() {
            warn!(
                "external data file {} of tensor '{}' does not exist, so it was not placed next to the output",
                source.display(),
                tensor.name()
            );
            continue;
        }
        let source = resolver.resolve(&tensor, &location)?;
        provide_data_file(&source, &out_dir.join(relative))?;
    }
    Ok(())
}

fn provide_data_file(source: &Path, target: &Path) -> Result<()> {
    if target.exists() {
        if same_content(source, target)? {
            return Ok(());
        }
        return Err(Error::io(
            "cannot place external data at",
            target,
            std::io::Error::other(format!(
                "a different file is already there; write the output into {} or move that file",
                model_dir(source).display()
            )),
        ));
    }

    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|error| Error::io("cannot create", parent, error))?;
    }
    copy_atomically(source, target)?;
    info!("copied external data {} -> {}", source.display(), target.display());
    Ok(())
}

/// Streams `source` into a temporary file next to `target`, then renames it.
///
/// A copy, not a hard link: onnx's checker (1.23) rejects an external data
/// file with several hard links as a possible hardlink attack.
fn copy_atomically(source: &Path, target: &Path) -> Result<()> {
    let mut reader = fs::File::open(source).map_err(|error| Error::io("cannot read external data", source, error))?;
    replace_atomically(target, |file| std::io::copy(&mut reader, file).map(|_| ()))
}

/// Compares two files in chunks, so that multi-gigabyte data files are not read whole.
fn same_content(a: &Path, b: &Path) -> Result<bool> {
    if let (Ok(a), Ok(b)) = (a.canonicalize(), b.canonicalize()) {
        if a == b {
            return Ok(true);
        }
    }
    let open = |path: &Path| fs::File::open(path).map_err(|error| Error::io("cannot read external data", path, error));
    let (mut file_a, mut file_b) = (open(a)?, open(b)?);
    let length = |file: &fs::File, path: &Path| file.metadata().map(|m| m.len()).map_err(|error| Error::io("cannot read", path, error));
    if length(&file_a, a)? != length(&file_b, b)? {
        return Ok(false);
    }

    let (mut chunk_a, mut chunk_b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let read_a = read_full(&mut file_a, &mut chunk_a).map_err(|error| Error::io("cannot read", a, error))?;
        let read_b = read_full(&mut file_b, &mut chunk_b).map_err(|error| Error::io("cannot read", b, error))?;
        if read_a != read_b || chunk_a[..read_a] != chunk_b[..read_b] {
            return Ok(false);
        }
        if read_a == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buffer` is full or the file ends; returns the bytes read.
fn read_full(file: &mut fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled)
}

/// Describes a decoding failure. prost's message lists every enclosing
/// field, which for a recursion limit is hundreds of names, so that case
/// gets a message of its own.
fn decode_failure(error: &prost::DecodeError) -> String {
    let message = error.to_string();
    if message.ends_with("recursion limit reached") {
        return "protobuf decoding failed: messages are nested more than 100 levels deep, the limit of the \
                prost 0.14 decoder (about 33 levels of nested subgraphs)"
            .to_string();
    }
    format!("protobuf decoding failed ({message}); the file may be truncated or not an ONNX model")
}

fn invalid(path: &Path, reason: String) -> Error {
    Error::InvalidModel {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{AttributeProto, NodeProto, ValueInfoProto};

    fn value(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.to_string()),
            ..Default::default()
        }
    }

    fn node(op_type: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op_type.to_string()),
            input: inputs.iter().map(|name| name.to_string()).collect(),
            output: outputs.iter().map(|name| name.to_string()).collect(),
            ..Default::default()
        }
    }

    fn model_bytes(graph: GraphProto) -> Bytes {
        let model = ModelProto {
            ir_version: Some(8),
            graph: Some(graph),
            ..Default::default()
        };
        Bytes::from(model.encode_to_vec())
    }

    #[test]
    fn unsorted_graph_is_sorted() {
        let graph = GraphProto {
            node: vec![node("Relu", &["a"], &["y"]), node("Neg", &["x"], &["a"])],
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        };

        let model = load_bytes(model_bytes(graph), Path::new("m.onnx")).unwrap();

        let order: Vec<&str> = model.proto.graph.as_ref().unwrap().node.iter().map(|node| node.op_type()).collect();
        assert_eq!(order, ["Neg", "Relu"]);
    }

    #[test]
    fn cycle_is_rejected() {
        let graph = GraphProto {
            node: vec![node("Relu", &["b"], &["a"]), node("Neg", &["a"], &["b"])],
            output: vec![value("b")],
            ..Default::default()
        };

        let error = load_bytes(model_bytes(graph), Path::new("m.onnx")).err().unwrap().to_string();

        assert!(error.contains("cycle"), "{error}");
    }

    #[test]
    fn branch_output_named_like_if_output() {
        // The branch defines "y" itself; it does not read the If's output.
        let branch = GraphProto {
            node: vec![node("Identity", &["x"], &["y"])],
            output: vec![value("y")],
            ..Default::default()
        };
        let mut if_node = node("If", &["cond"], &["y"]);
        for name in ["then_branch", "else_branch"] {
            if_node.attribute.push(AttributeProto {
                name: Some(name.to_string()),
                g: Some(branch.clone()),
                ..Default::default()
            });
        }
        let graph = GraphProto {
            node: vec![if_node],
            input: vec![value("x"), value("cond")],
            output: vec![value("y")],
            ..Default::default()
        };

        let loaded = load_bytes(model_bytes(graph), Path::new("m.onnx"));

        assert!(loaded.is_ok(), "{:?}", loaded.err().map(|error| error.to_string()));
    }
}
