/// One trained parameter as the optimizer sees it: its name in the saved file (a Hugging
/// Face parameter name for full fine-tuning, a PEFT key for adapters), the value, and its
/// accumulated gradient (same shape, same backend).
public struct TrainableTensor {
  /// Name in the output file and in checkpoints.
  public let name: String
  /// The parameter.
  public let value: Tensor
  /// dL/dvalue, accumulated by the backward pass.
  public let gradient: Tensor
  /// False for parameters that take no weight decay.
  public let decays: Bool

  public init(name: String, value: Tensor, gradient: Tensor, decays: Bool = true) {
    self.name = name; self.value = value; self.gradient = gradient; self.decays = decays
  }

  /// Number of elements.
  public var count: Int { value.count }
}
