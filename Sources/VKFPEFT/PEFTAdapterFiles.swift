import Foundation
import VKFCore
import VKFModel

/// PEFT adapter directories: `adapter_model.safetensors` + `adapter_config.json` + README.md,
/// exactly as peft's `save_pretrained` writes them, so `PeftModel.from_pretrained(base, dir)`
/// loads ours and `load` reads PEFT's.
///
/// Tensors (f32): `base_model.model.<module>.lora_A.weight` (r, in), `….lora_B.weight`
/// (out, r), DoRA's `….lora_magnitude_vector` (out). The config carries the field set of
/// peft `peftFormatVersion` (older peft ignores the keys it does not know).
///
/// A reward-model adapter is peft's sequence-classification form: `task_type: "SEQ_CLS"`,
/// `modules_to_save: ["classifier", "score"]` (what `get_peft_model` sets for SEQ_CLS) and the
/// fully trained head as `base_model.model.score.weight` (1, hidden), so
/// `PeftModel.from_pretrained(AutoModelForSequenceClassification…(num_labels=1), dir)` loads it.
public enum PEFTAdapterFiles {
  /// The adapter weights file peft reads first.
  public static let weightsFileName = "adapter_model.safetensors"
  /// The adapter config file.
  public static let configFileName = "adapter_config.json"
  /// The model card.
  public static let readmeFileName = "README.md"
  /// The peft release whose adapter_config.json field set `save` writes (and records as
  /// `peft_version`).
  public static let peftFormatVersion = "0.21.2"
  /// The key of a reward adapter's score head (peft strips `modules_to_save.default`).
  public static let scoreHeadKey = "base_model.model.score.weight"
  /// `modules_to_save` of a SEQ_CLS adapter as peft 0.21.2 writes it (`classifier` is the
  /// head's name in other architectures; a Llama has only `score`).
  public static let sequenceClassificationModules = ["classifier", "score"]

  // MARK: - Saving

  /// Writes `lora`'s adapters to `dir` atomically (built in a hidden sibling directory, then
  /// renamed). An existing non-empty `dir` is refused unless `overwrite` is set, in which case
  /// it is replaced whole.
  ///
  /// - Parameters:
  ///   - baseModel: `base_model_name_or_path` (the Hub id or path of the base model).
  ///   - readme: the training recipe, Markdown inserted verbatim under "Training recipe" in
  ///     the model card (e.g. a fenced YAML block); nil: a card without one.
  ///   - scoreHead: a reward model's head `score.weight` (1, hidden): the adapter is then
  ///     written as peft's SEQ_CLS form with the head in `modules_to_save`.
  ///   - headTensors: a classifier's fully trained head by PEFT key
  ///     (`base_model.model.classifier.weight` / `.bias`): written as SEQ_CLS too.
  public static func save(_ lora: LoRAModel, baseModel: String, to dir: URL, readme: String? = nil,
                          overwrite: Bool = false, scoreHead: Tensor? = nil,
                          headTensors: [(key: String, tensor: Tensor)] = []) throws {
    let be = lora.weights.backend
    var tensors = try lora.peftTensors().filter { $0.key != scoreHeadKey }.map { t in
      try SafetensorsWriter.Tensor(name: t.key, shape: t.shape, floats: t.values)
    }
    if let scoreHead {
      let hidden = lora.weights.hiddenSize
      guard scoreHead.shape == [1, hidden] else {
        throw PEFTError("the score head has shape \(scoreHead.shape); a reward adapter needs [1, \(hidden)]")
      }
      tensors.append(try SafetensorsWriter.Tensor(name: scoreHeadKey, shape: [1, hidden], floats: try be.floats(scoreHead)))
    }
    for (key, t) in headTensors {
      tensors.append(try SafetensorsWriter.Tensor(name: key, shape: t.shape, floats: try be.floats(t)))
    }
    let fused = lora.weights.fusedProjections, modules = lora.weights.loraModules
    let sequenceClassification = scoreHead != nil || !headTensors.isEmpty
    let config = try AtomicDirectory.jsonData(configObject(lora.config, baseModel: baseModel,
                                                           sequenceClassification: sequenceClassification,
                                                           fusedProjections: fused, modules: modules))
    let labels = headTensors.first { $0.key.hasSuffix(".weight") }?.tensor.shape.first ?? 0
    let card = modelCard(config: lora.config, baseModel: baseModel, recipe: readme,
                         sequenceClassification: sequenceClassification, modules: modules, classifierLabels: labels)
    try AtomicDirectory.write(to: dir, overwrite: overwrite, what: "adapter directory") { tmp in
      // peft's save_pretrained writes metadata {"format": "pt"}.
      try SafetensorsWriter.write(tensors: tensors, metadata: ["format": "pt"],
                                  to: tmp.appendingPathComponent(weightsFileName))
      try AtomicDirectory.writeFile(config, to: tmp.appendingPathComponent(configFileName))
      try AtomicDirectory.writeFile(Data(card.utf8), to: tmp.appendingPathComponent(readmeFileName))
    }
  }

  /// adapter_config.json as peft 0.21.2's `LoraConfig.save_pretrained` writes it: every
  /// field, the ones vkfinetune does not use at peft's defaults. `sequenceClassification`:
  /// a reward adapter (`task_type` SEQ_CLS, the head in `modules_to_save`).
  /// `fusedProjections`: target_modules named as on a Phi-3 (qkv_proj, gate_up_proj).
  public static func configObject(_ config: LoRAConfig, baseModel: String,
                                  sequenceClassification: Bool = false, fusedProjections fused: Bool = false,
                                  modules: [String] = LoRAConfig.allLinear) -> [String: Any] {
    let null = NSNull()
    var object: [String: Any] = [
      "alora_invocation_tokens": null, "alpha_pattern": [String: Any](), "arrow_config": null,
      "auto_mapping": null, "base_model_name_or_path": baseModel, "bias": "none", "corda_config": null,
      "ensure_weight_tying": false, "eva_config": null, "exclude_modules": null, "fan_in_fan_out": false,
      "inference_mode": true, "init_lora_weights": true, "kasa_config": null, "layer_replication": null,
      "layers_pattern": null, "layers_to_transform": null, "loftq_config": [String: Any](),
      "lora_alpha": jsonNumber(config.alpha), "lora_bias": false,
      "lora_dropout": HFModelWriter.shortestDouble(config.dropout),  // peft writes a float (0.0)
      "lora_ga_config": null, "megatron_config": null, "megatron_core": "megatron.core",
      "modules_to_save": null, "monteclora_config": null, "peft_type": "LORA",
      "peft_version": peftFormatVersion, "qalora_group_size": 16, "r": config.r,
      "rank_pattern": [String: Any](), "revision": null, "target_modules": config.peftTargetModules(fusedProjections: fused, among: modules),
      "target_parameters": config.resolvedTargetParameters.isEmpty ? null
        : config.resolvedTargetParameters.map { "mlp.experts." + $0 }.sorted(),
      "task_type": "CAUSAL_LM", "trainable_token_indices": null,
      "use_bdlora": null, "use_dora": config.useDoRA, "use_qalora": false, "use_rslora": config.useRSLoRA,
      "velora_config": null,
    ]
    if sequenceClassification {
      object["task_type"] = "SEQ_CLS"
      object["modules_to_save"] = sequenceClassificationModules
    }
    return object
  }

  /// An integral float as a JSON integer (peft writes `"lora_alpha": 16`), else its shortest
  /// decimal (0.05, not 0.05000000074505806).
  static func jsonNumber(_ x: Float) -> Any {
    if x == x.rounded(), abs(x) < 1e9 { return Int(x) }
    return HFModelWriter.shortestDouble(x)
  }

  /// The README.md model card: peft's front matter (so the Hub lists it as a PEFT adapter of
  /// the base), the settings, the recipe, and how to load it.
  static func modelCard(config: LoRAConfig, baseModel: String, recipe: String?,
                        sequenceClassification: Bool = false, modules: [String] = LoRAConfig.allLinear,
                        classifierLabels: Int = 0) -> String {
    // A JSON string literal is also a valid YAML double-quoted scalar and Python string literal.
    let quoted = AtomicDirectory.jsonString(baseModel)
    let method = config.useDoRA ? "DoRA" : (config.useRSLoRA ? "rsLoRA" : "LoRA")
    var s = """
      ---
      base_model: \(quoted)
      library_name: peft
      tags:
      - \(method.lowercased())
      - vkfinetune
      ---

      # \(method) \(classifierLabels > 0 ? "classifier " : sequenceClassification ? "reward-model " : "")adapter for \(baseModel)

      Trained with vkfinetune. Settings: r = \(config.r), lora_alpha = \(config.alpha), \
      lora_dropout = \(config.dropout), use_rslora = \(config.useRSLoRA), use_dora = \(config.useDoRA), \
      target modules: \(config.resolvedTargetModules(among: modules).joined(separator: ", ")).

      """
    if let recipe, !recipe.isEmpty {
      s += "\n## Training recipe\n\n" + (recipe.hasSuffix("\n") ? recipe : recipe + "\n")
    }
    if classifierLabels > 0 {
      s += """

        ## Use

        A sequence classifier of \(classifierLabels) labels (the classifier head is in `modules_to_save`).

        ```python
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification
        base = AutoModelForSequenceClassification.from_pretrained(\(quoted), num_labels=\(classifierLabels))
        model = PeftModel.from_pretrained(base, "<this directory>")
        ```

        """
      return s
    }
    if sequenceClassification {
      s += """

        ## Use

        A reward model: the score of a sequence is the head applied to its last token that is \
        not the pad token (set `pad_token_id` as in training).

        ```python
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification
        base = AutoModelForSequenceClassification.from_pretrained(\(quoted), num_labels=1)
        model = PeftModel.from_pretrained(base, "<this directory>")
        ```

        """
      return s
    }
    s += """

      ## Use

      ```python
      from peft import PeftModel
      from transformers import AutoModelForCausalLM
      model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(\(quoted)), "<this directory>")
      ```

      """
    return s
  }
}
