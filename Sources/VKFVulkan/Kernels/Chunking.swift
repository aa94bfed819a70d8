import VKFCore

// Splitting ops whose tensors are larger than one descriptor may bind
// (maxStorageBufferRange: 128 MiB on lavapipe, 4 GiB on most discrete GPUs). SmolLM2's
// logits at batch 4 × 256 are 192 MiB, so the LM head and its cross-entropy need this.

extension VulkanBackend {
  /// Bytes one binding can cover whatever the tensor's alignment (the bound range starts
  /// up to minStorageBufferOffsetAlignment before the tensor).
  var bindableBytes: Int {
    capabilities.maxStorageBufferRange - max(capabilities.minStorageBufferOffsetAlignment, 4)
  }

  /// True when `t` fits one binding.
  func fitsBinding(_ t: Tensor) -> Bool { t.byteCount <= bindableBytes }

  /// 0..<rows in chunks of whole `multiple`-row groups whose rows of `rowBytes` bytes (the
  /// widest tensor taking part) fit one binding. One chunk when everything fits.
  func rowChunks(rows: Int, rowBytes: Int, multiple: Int = 1, op: Op) throws -> [Range<Int>] {
    let groupBytes = rowBytes * multiple
    guard groupBytes <= bindableBytes else {
      throw VKFError.unsupported(op: op.rawValue, detail: "\(multiple) row(s) of \(rowBytes) bytes "
        + "exceed the \(capabilities.maxStorageBufferRange)-byte binding limit of this device")
    }
    let step = max(1, bindableBytes / max(groupBytes, 1)) * multiple
    return stride(from: 0, to: rows, by: step).map { $0..<min(rows, $0 + step) }
  }
}

extension Tensor {
  /// Rows `r` of this tensor seen as (rowCount, lastDim) — or as (count / rowLength,
  /// rowLength) when `rowLength` is given.
  func rowSlice(_ r: Range<Int>, rowLength: Int? = nil) throws -> Tensor {
    let len = rowLength ?? lastDim
    return try reshaped([count / max(len, 1), len]).rows(r)
  }
}
