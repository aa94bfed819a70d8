// Post-training int8 quantisation of a model's projections, written as a compressed-tensors
// checkpoint (pack-quantized, what llm-compressor writes and vLLM / transformers load), and
// swapped into the loaded weights so the quantised model can be evaluated here.
import Foundation
import VKFCore
import VKFModel

/// `vkfinetune quantize`'s work: quantise every projection, write the directory, and replace
/// the in-memory projections by their int8 bases.
public enum Int8ModelWriter {
  /// What was quantised.
  public struct Report: Sendable {
    public var projections = 0
    /// f32 bytes of the projections before; int8 values plus scales and zero points after.
    public var denseBytes = 0, quantizedBytes = 0
    /// Σ(ŵ − w)² / Σw² over every projection weight.
    public var relativeSquaredError = 0.0
    public init() {}
  }

  /// Quantises `weights`' dense projections with `scheme` (dense weights stay where they are;
  /// call `useQuantized` to swap them).
  public static func quantize(_ weights: DecoderWeights, scheme: CompressedTensors.Scheme) throws
    -> (report: Report, parts: [String: CompressedTensors.Quantized]) {
    let be = weights.backend
    var report = Report(), parts = [String: CompressedTensors.Quantized]()
    var num = 0.0, den = 0.0
    try weights.updateProjections { module, linear in
      guard let w = linear.denseWeight else {
        throw PEFTError("\(module) is not a dense f32 weight (an NF4 or int8 base cannot be quantised again)")
      }
      let (rows, cols) = (linear.outFeatures, linear.inFeatures)
      if case .group(let g) = scheme.strategy, cols % g != 0 {
        let divisors = [32, 64, 128, 256].filter { cols % $0 == 0 }.map(String.init).joined(separator: ", ")
        throw PEFTError("--group-size \(g) does not divide the \(cols) columns of \(module) (\(rows)×\(cols))"
          + (divisors.isEmpty ? "" : "; \(divisors) would"))
      }
      let values = try be.floats(w)
      let q = try CompressedTensors.quantize(values, rows: rows, cols: cols, scheme: scheme)
      let block = scheme.strategy.blockSize(rows: rows, cols: cols)
      for i in values.indices {
        let z = Float(q.zeroPoints?[i / block] ?? 0)
        let back = (Float(q.q[i]) - z) * q.scales[i / block]
        num += Double(back - values[i]) * Double(back - values[i])
        den += Double(values[i]) * Double(values[i])
      }
      report.projections += 1
      report.denseBytes += 4 * values.count
      report.quantizedBytes += values.count + 4 * q.scales.count + (q.zeroPoints?.count ?? 0)
      parts[module + ".weight"] = q
    }
    report.relativeSquaredError = den > 0 ? num / den : 0
    return (report, parts)
  }

  /// Replaces each projection's base in `weights` by its int8 form from `parts`.
  public static func useQuantized(_ weights: DecoderWeights, parts: [String: CompressedTensors.Quantized],
                                  scheme: CompressedTensors.Scheme) throws {
    let be = weights.backend
    try weights.updateProjections { module, linear in
      guard let q = parts[module + ".weight"] else { return }
      let (rows, cols) = (linear.outFeatures, linear.inFeatures)
      linear.base = .int8(try Int8Weight.uploading(q.q, scales: q.scales, zeroPoints: q.zeroPoints.map { $0.map(Float.init) },
                                                   rows: rows, cols: cols,
                                                   blockSize: scheme.strategy.blockSize(rows: rows, cols: cols), on: be))
    }
  }

  /// Writes `weights` (dense) as a compressed-tensors directory at `dir`, atomically: every
  /// projection in `parts` as weight_packed / weight_scale / weight_shape (and
  /// weight_zero_point), the rest f32 by its Hugging Face name; config.json with
  /// quantization_config; the tokenizer files beside `model`'s source.
  public static func write(_ weights: DecoderWeights, parts: [String: CompressedTensors.Quantized],
                           scheme: CompressedTensors.Scheme, model: LoadedModel, to dir: URL, overwrite: Bool) throws {
    let config = try model.config ?? HFModelWriter.synthesizedConfig(
      shape: weights.shape, facts: try (model.weights as? GGUFWeightSource).map { try GGUFModelFacts(file: $0.file) },
      bosTokenID: model.bosTokenID, eosTokenIDs: model.eosTokenIDs)
    try write(weights, parts: parts, scheme: scheme, config: config, tokenizerSource: model.location.url, to: dir,
              overwrite: overwrite)
  }

  /// `write` with the config and the file or directory whose tokenizer files are copied given.
  public static func write(_ weights: DecoderWeights, parts: [String: CompressedTensors.Quantized],
                           scheme: CompressedTensors.Scheme, config: DecoderConfig, tokenizerSource: URL?,
                           to dir: URL, overwrite: Bool) throws {
    var cfg = config
    try HFModelWriter.check(cfg, matches: weights.shape)
    cfg.torchDtype = "float32"
    var config = try HFModelWriter.configObject(cfg)
    config["quantization_config"] = CompressedTensors.quantizationConfig(scheme)
    let be = weights.backend
    var tensors = [SafetensorsWriter.Tensor]()
    for (name, tensor) in try HFModelWriter.denseTensors(of: weights) {
      guard let q = parts[name] else {
        tensors.append(try SafetensorsWriter.Tensor(name: name, shape: tensor.shape, floats: try be.floats(tensor)))
        continue
      }
      let (rows, cols) = (tensor.shape[0], tensor.shape[1])
      let module = String(name.dropLast("weight".count))
      tensors.append(.init(name: module + "weight_packed", shape: [rows, (cols + 3) / 4], dtype: .i32,
                           data: CompressedTensors.packColumns(q.q, rows: rows, cols: cols)))
      let perRow = q.scales.count / max(rows, 1)
      let scaleShape: [Int]
      if case .tensor = scheme.strategy { scaleShape = [1] } else { scaleShape = [rows, perRow] }
      tensors.append(try .init(name: module + "weight_scale", shape: scaleShape, floats: q.scales))
      tensors.append(.init(name: module + "weight_shape", shape: [2], dtype: .i64,
                           data: [Int64(rows), Int64(cols)].flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } }))
      if let z = q.zeroPoints {
        if case .tensor = scheme.strategy {
          tensors.append(.init(name: module + "weight_zero_point", shape: [1], dtype: .i8, data: z.map { UInt8(bitPattern: $0) }))
        } else {
          tensors.append(.init(name: module + "weight_zero_point", shape: [(rows + 3) / 4, perRow], dtype: .i32,
                               data: CompressedTensors.packRows(z, rows: rows, cols: perRow)))
        }
      }
    }
    let sources = HFModelWriter.tokenizerFiles(near: tokenizerSource)
    try AtomicDirectory.write(to: dir, overwrite: overwrite, what: "quantised model directory") { tmp in
      try SafetensorsWriter.write(tensors: tensors, metadata: ["format": "pt"],
                                  to: tmp.appendingPathComponent(SafetensorsCheckpoint.singleFileName))
      try AtomicDirectory.writeFile(try AtomicDirectory.jsonData(config), to: tmp.appendingPathComponent("config.json"))
      for file in sources {
        let data: Data
        do { data = try BoundedFile.read(file, BoundedFile.tokenizer) } catch {
          throw PEFTError("cannot read \(file.path) to copy it beside the model: \(error.localizedDescription)")
        }
        try AtomicDirectory.writeFile(data, to: tmp.appendingPathComponent(file.lastPathComponent))
      }
    }
  }
}
