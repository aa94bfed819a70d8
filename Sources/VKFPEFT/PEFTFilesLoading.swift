import Foundation
import VKFCore
import VKFModel

// MARK: - Reading adapter directories

extension PEFTAdapterFiles {
  /// Reads `adapter_config.json` in `dir` (or the file itself): the LoRA settings and
  /// `base_model_name_or_path` (nil when absent or null).
  ///
  /// Settings vkfinetune cannot honour (trained biases, fan_in_fan_out, modules_to_save,
  /// per-layer rank or alpha patterns, layer subsets, non-Llama target names) are refused
  /// with a one-line error rather than silently loaded as something else.
  public static func readConfig(_ dir: URL) throws -> (config: LoRAConfig, baseModel: String?) {
    let info = try readAdapterConfig(dir)
    return (info.config, info.baseModel)
  }

  /// What adapter_config.json describes.
  public struct AdapterConfig: Sendable, Equatable {
    /// The LoRA settings.
    public var config: LoRAConfig
    /// `base_model_name_or_path`, nil when absent or null.
    public var baseModel: String?
    /// True for a reward model's adapter (`task_type` SEQ_CLS): it carries the score head.
    public var sequenceClassification: Bool
  }

  /// Reads `adapter_config.json` like `readConfig`, also telling a reward-model (SEQ_CLS)
  /// adapter apart. A SEQ_CLS adapter may list only peft's head names in `modules_to_save`
  /// (`classifier`, `score`); any other `modules_to_save` is refused as before.
  public static func readAdapterConfig(_ dir: URL) throws -> AdapterConfig {
    let file = configURL(dir)
    let data: Data
    do { data = try BoundedFile.read(file, BoundedFile.settings) } catch {
      throw PEFTError("\(file.path): cannot read the adapter config (\(error.localizedDescription)); "
        + "an adapter directory holds \(configFileName) and \(weightsFileName)")
    }
    guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
      throw PEFTError("\(file.path): not a JSON object; expected peft's \(configFileName)")
    }
    func fail(_ why: String) -> PEFTError { PEFTError("\(file.path): \(why)") }
    func present(_ key: String) -> Any? {
      guard let v = object[key], !(v is NSNull) else { return nil }
      return v
    }
    func number(_ key: String) throws -> Double? {
      guard let v = present(key) else { return nil }
      guard let n = v as? NSNumber, !isBool(n) else { throw fail("\(key) must be a number, got \(v)") }
      return n.doubleValue
    }
    func bool(_ key: String) throws -> Bool? {
      guard let v = present(key) else { return nil }
      guard let n = v as? NSNumber, isBool(n) else { throw fail("\(key) must be true or false, got \(v)") }
      return n.boolValue
    }

    guard let peftType = present("peft_type") as? String else {
      throw fail("peft_type is missing; this is not a PEFT adapter config")
    }
    guard peftType == "LORA" else {
      throw fail("peft_type is \"\(peftType)\"; only LORA adapters (LoRA, rsLoRA, DoRA) are supported")
    }
    let task = present("task_type") as? String
    if let task, task != "CAUSAL_LM", task != "SEQ_CLS" {
      throw fail("task_type is \"\(task)\"; only CAUSAL_LM adapters (and SEQ_CLS reward-model adapters) are supported")
    }
    let sequenceClassification = task == "SEQ_CLS"
    guard let r = try number("r") else { throw fail("r is missing; the LoRA rank is required") }
    guard r == r.rounded(), r > 0, r < Double(Int32.max) else { throw fail("r must be a positive integer, got \(r)") }
    guard let alpha = try number("lora_alpha") else { throw fail("lora_alpha is missing") }
    let dropout = try number("lora_dropout") ?? 0

    // Unsupported variants, each of which would change the math if ignored.
    if let bias = present("bias") as? String, bias != "none" {
      throw fail("bias is \"\(bias)\"; only \"none\" is supported (the adapter would carry trained biases)")
    }
    if try bool("fan_in_fan_out") == true {
      throw fail("fan_in_fan_out is true (GPT-2 Conv1D layout); Llama projections need false")
    }
    if try bool("lora_bias") == true { throw fail("lora_bias is true; LoRA B biases are not supported") }
    if let m = present("modules_to_save") as? [Any], !m.isEmpty {
      // A reward adapter's head is the one fully trained module understood (loaded as the score head).
      let names = m.compactMap { $0 as? String }
      let headOnly = names.count == m.count && names.allSatisfy(sequenceClassificationModules.contains)
      guard sequenceClassification, headOnly else {
        throw fail("modules_to_save \(m) is set; adapters with fully trained extra modules are not supported "
          + "(only a SEQ_CLS reward adapter's \(sequenceClassificationModules.joined(separator: "/")) head)")
      }
    } else if let v = present("modules_to_save"), !(v is [Any]) {
      throw fail("modules_to_save must be a list of module names")
    }
    for key in ["rank_pattern", "alpha_pattern"] {
      if let p = present(key) as? [String: Any], !p.isEmpty {
        throw fail("\(key) is set; per-module ranks or alphas are not supported")
      }
    }
    if present("layers_to_transform") != nil {
      throw fail("layers_to_transform is set; adapters on a subset of layers are not supported")
    }

    let parameters: [String]
    switch present("target_parameters") {
    case nil: parameters = []
    case let one as String: parameters = [one]
    case let list as [Any]:
      parameters = try list.map { v in
        guard let s = v as? String else { throw fail("target_parameters must be a list of names, got \(v)") }
        return s
      }
    case let other?: throw fail("target_parameters must be a list of names, got \(other)")
    }
    let targets = present("target_modules") == nil && !parameters.isEmpty
      ? [] : try targetModules(present("target_modules"), fail: fail)
    let config = LoRAConfig(r: Int(r), alpha: Float(alpha), dropout: Float(dropout), targetModules: targets,
                            useRSLoRA: try bool("use_rslora") ?? false, useDoRA: try bool("use_dora") ?? false,
                            targetParameters: parameters)
    do { try config.validate() } catch let e as PEFTError { throw fail(e.message) }
    return AdapterConfig(config: config, baseModel: present("base_model_name_or_path") as? String,
                         sequenceClassification: sequenceClassification)
  }

  /// target_modules as short names: a list of short names, full module names
  /// (`model.layers.0.self_attn.q_proj`, as peft writes after expanding "all-linear"), or
  /// the string "all-linear" / one short name.
  static func targetModules(_ value: Any?, fail: (String) -> PEFTError) throws -> [String] {
    guard let value else { throw fail("target_modules is missing; name the projections the adapter targets") }
    let names: [String]
    if let one = value as? String {
      names = [one]
    } else if let list = value as? [Any], list.allSatisfy({ $0 is String }) {
      names = list.compactMap { $0 as? String }
    } else {
      throw fail("target_modules must be a list of module names or \"all-linear\", got \(value)")
    }
    let valid = Set(LoRAConfig.knownModules + [LoRAConfig.allLinearKeyword])
    var out: [String] = []
    for name in names {
      let short = name.split(separator: ".").last.map(String.init) ?? name
      guard valid.contains(short), short == name || name.hasPrefix("model.layers.") else {
        throw fail("target module \"\(name)\" is not one of \(LoRAConfig.knownModules.joined(separator: ", ")) "
          + "(a regular expression or another architecture's names cannot be applied)")
      }
      if !out.contains(short) { out.append(short) }
    }
    return out
  }

  /// Loads the adapter in `dir` onto `weights` (the base model, f32 or QLoRA-quantised),
  /// checking every tensor's key and shape first. `seed` only seeds what the file replaces.
  ///
  /// On any error the weights are left without adapters. A reward-model (SEQ_CLS) adapter is
  /// refused here, since its score head would be dropped: use `loadAdapter`.
  public static func load(_ dir: URL, into weights: DecoderWeights, seed: UInt64 = 0) throws -> LoRAModel {
    let info = try readAdapterConfig(dir)
    guard !info.sequenceClassification else {
      throw PEFTError("\(configURL(dir).path): a reward-model adapter (task_type SEQ_CLS, with a score head), "
        + "not a language-model one; score with it (vkfinetune score), or merge it into a reward model")
    }
    return try loadAdapter(dir, into: weights, seed: seed).lora
  }

  /// An adapter loaded onto a base model: the LoRA adapters and, for a reward model, the head.
  public struct LoadedAdapter {
    /// The adapters, attached to the weights.
    public let lora: LoRAModel
    /// `score.weight` (1, hidden) of a SEQ_CLS adapter, row-major; nil for CAUSAL_LM.
    public let scoreHead: [Float]?
    /// `base_model_name_or_path`.
    public let baseModel: String?
  }

  /// Loads any supported adapter in `dir` (CAUSAL_LM or SEQ_CLS) onto `weights`, checking
  /// every tensor's key and shape first; a SEQ_CLS adapter must carry
  /// `base_model.model.score.weight` (1, hidden). On any error the weights are left without
  /// adapters.
  public static func loadAdapter(_ dir: URL, into weights: DecoderWeights, seed: UInt64 = 0) throws -> LoadedAdapter {
    let info = try readAdapterConfig(dir)
    let config = info.config
    let file = dir.appendingPathComponent(weightsFileName)
    guard FileManager.default.fileExists(atPath: file.path) else {
      let bin = FileManager.default.fileExists(atPath: dir.appendingPathComponent("adapter_model.bin").path)
      throw PEFTError("\(file.path) is missing" + (bin
        ? "; only adapter_model.bin (a pickle) is there: re-save it with peft's save_pretrained(safe_serialization=True)"
        : "; an adapter directory holds \(configFileName) and \(weightsFileName)"))
    }
    let st: SafetensorsFile
    do { st = try SafetensorsFile(contentsOf: file) } catch { throw PEFTError("\(error)") }

    // Expected keys and shapes, from the model, before anything is attached.
    var expected = try expectedTensors(config: config, weights: weights)
    if info.sequenceClassification { expected.append((scoreHeadKey, [1, weights.shape.hidden])) }
    let present = Set(st.tensorNames)
    for (key, shape) in expected {
      guard present.contains(key) else {
        throw PEFTError("\(file.path): adapter tensor \(key) is missing (expected shape \(shape)); "
          + "the adapter was made for another model or config")
      }
      let got = try st.shape(of: key)
      guard got == shape else {
        throw PEFTError("\(file.path): adapter tensor \(key) has shape \(got) but this model needs \(shape); "
          + "the adapter was made for another base model or rank")
      }
    }
    let known = Set(expected.map(\.key))
    if let extra = st.tensorNames.first(where: { !known.contains($0) }) {
      throw PEFTError("\(file.path): unexpected adapter tensor \(extra); the config's target_modules "
        + "(\(config.resolvedTargetModules.joined(separator: ", "))\(config.useDoRA ? ", DoRA" : "")) "
        + "do not describe this file")
    }
    var values: [String: [Float]] = [:]
    for (key, _) in expected {
      do { values[key] = try st.floats(key) } catch { throw PEFTError("\(file.path): \(key): \(error)") }
    }

    let scoreHead = values.removeValue(forKey: scoreHeadKey)
    let loraExpected = expected.filter { $0.key != scoreHeadKey }
    let lora = try LoRAModel(weights: weights, config: config, seed: seed)
    do {
      let made = lora.peftShapes
      guard made.count == loraExpected.count, loraExpected.allSatisfy({ made[$0.key] == $0.shape }) else {
        throw PEFTError("internal: the LoRA model's tensors differ from the adapter file's expected keys")
      }
      try lora.load(values)
    } catch {
      lora.detach()
      throw error
    }
    return LoadedAdapter(lora: lora, scoreHead: scoreHead, baseModel: info.baseModel)
  }

  /// Every PEFT key and shape an adapter with `config` has on `weights`, in module order.
  /// A fused projection (Phi-3's qkv_proj, gate_up_proj) is one module whose B stacks its
  /// parts' rows.
  static func expectedTensors(config: LoRAConfig, weights: DecoderWeights) throws -> [(key: String, shape: [Int])] {
    try config.checkTargets(fusedProjections: weights.shape.fusedProjections)
    let targets = Set(config.resolvedTargetModules)
    var partOf: [String: String] = [:]
    for f in weights.shape.fusedModules { for part in f.parts { partOf[part.module] = f.module } }
    var order: [String] = [], shapes: [String: (inF: Int, outF: Int)] = [:]
    weights.updateProjections { module, linear in
      guard let short = module.split(separator: ".").last.map(String.init), targets.contains(short) else { return }
      let group = partOf[module] ?? module
      if let s = shapes[group] {
        shapes[group] = (s.inF, s.outF + linear.outFeatures)
      } else {
        order.append(group)
        shapes[group] = (linear.inFeatures, linear.outFeatures)
      }
    }
    var out: [(key: String, shape: [Int])] = []
    for module in order {
      guard let s = shapes[module] else { continue }
      out.append((LoRAModel.peftKey(module: module, LoRAModel.loraAKey), [config.r, s.inF]))
      out.append((LoRAModel.peftKey(module: module, LoRAModel.loraBKey), [s.outF, config.r]))
      if config.useDoRA {
        out.append((LoRAModel.peftKey(module: module, LoRAModel.magnitudeKey), [s.outF]))
      }
    }
    // Expert parameters (target_parameters) after the projections, as PEFT's keys.
    for p in try LoRAModel.expertPlan(weights: weights, config: config) {
      out.append((p.peftKey(LoRAModel.loraAKey), p.peftAShape))
      out.append((p.peftKey(LoRAModel.loraBKey), p.peftBShape))
    }
    return out
  }

  /// `dir/adapter_config.json`, or `dir` itself when it names a file.
  static func configURL(_ dir: URL) -> URL {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDirectory), !isDirectory.boolValue {
      return dir
    }
    return dir.appendingPathComponent(configFileName)
  }

  /// True for JSON true/false (Foundation decodes both booleans and numbers to NSNumber;
  /// booleans have the `char` type code on Linux and Darwin).
  static func isBool(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }
}
