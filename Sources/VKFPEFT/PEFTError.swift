/// A PEFT setting, adapter or file that cannot be used, in one line saying what to change.
public struct PEFTError: Error, CustomStringConvertible, Equatable {
  /// What is wrong and what to do about it.
  public var message: String

  /// An error with a one-line message.
  public init(_ m: String) { message = m }

  public var description: String { message }
}
