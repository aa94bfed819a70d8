import VKFCore

/// Where a model's weights come from: a safetensors checkpoint (one file or sharded) or a
/// GGUF file. Names and shapes are always in Hugging Face layout
/// ("model.layers.0.self_attn.q_proj.weight", shape [out, in]) whatever the file stores,
/// so the model is built the same way from either.
public protocol WeightSource: AnyObject {
  /// Every tensor name, in Hugging Face layout, sorted.
  var tensorNames: [String] { get }
  /// The tensor's shape in Hugging Face layout (outermost first).
  func shape(of name: String) throws -> [Int]
  /// The stored element type as a short name ("F32", "BF16", "Q4_1", …), for reports.
  func storedType(of name: String) throws -> String
  /// The tensor as row-major f32 (converted, dequantised and un-permuted as needed).
  func floats(_ name: String) throws -> [Float]
  /// The file (or index) the tensors come from, for error messages; "" when in memory.
  var weightsPath: String { get }
}

extension WeightSource {
  public var weightsPath: String { "" }
}

/// A model file that cannot be used, with what was wrong and where.
public struct ModelFileError: Error, CustomStringConvertible, Equatable {
  /// The file (or directory) concerned.
  public var path: String
  /// What is wrong, in one line, ideally with what to do about it.
  public var detail: String

  public init(_ path: String, _ detail: String) {
    self.path = path
    self.detail = detail
  }

  public var description: String { "\(path): \(detail)" }
}
