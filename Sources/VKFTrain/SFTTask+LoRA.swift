import VKFModel
import VKFPEFT

extension SFTTask {
  /// LoRA / QLoRA / DoRA: trains `lora`'s adapter tensors on `model` (built over the same
  /// weights), with its dropout seeded per micro-batch and switched off during evaluation.
  public convenience init(model: DecoderModel, lora: LoRAModel) {
    self.init(model: model, trainables: lora.trainableTensors, zero: { try lora.zeroGradients() },
              setDropoutSeed: { try lora.setDropoutSeed($0) }, setTraining: { lora.training = $0 })
  }
}
