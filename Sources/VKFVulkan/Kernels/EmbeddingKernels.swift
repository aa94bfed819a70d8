import VKFCore

// Token embedding lookup and its deterministic scatter-add backward
// (embedding.comp, embedding_back.comp).

/// Push constants of embedding.comp and embedding_back.comp (after the 8 binding offsets).
struct EmbeddingPush {
  /// Tokens.
  var n: UInt32
  /// Embedding width.
  var cols: UInt32
  /// Table rows; ids outside [0, vocab) give NaN rows forward and are skipped backward.
  var vocab: UInt32
}

extension VulkanBackend {
  /// embedding.comp: out (n, c) = table[ids]. Out-of-range ids give NaN rows (no host check:
  /// reading ids would stall the queue).
  public func embedding(ids: Tensor, table: Tensor, into out: Tensor) throws {
    try checkOwnership(.embedding, ids, table, out)
    try ShapeCheck.embedding(.embedding, ids, table, out)
    // ids: (N) i32; table: (V, C); out: (N, C)
    let push = try embeddingPush(.embedding, ids, table)
    guard out.count > 0 else { return }
    _ = try shaderUInt(out.count, .embedding)  // the shader's flat element index
    try dispatch("embedding", defines: ["TABLE_TYPE": castTypeCodes[table.dtype] ?? "0"],
                 specialization: blockSpecialization, bindings: [ids, table, out],
                 push: push, groups: try elementGroups(out.count, op: .embedding))
  }

  /// embedding_back.comp: dTable[ids[i]] += dOut[i], in token order, without float atomics.
  public func embeddingBackward(ids: Tensor, dOut: Tensor, dTable: Tensor) throws {
    let op = Op.embeddingBackward
    try checkOwnership(op, ids, dOut, dTable)
    try ShapeCheck.embedding(op, ids, dTable, dOut)
    // ids: (N) i32; dOut: (N, C); dTable: (V, C)
    let push = try embeddingPush(op, ids, dTable)
    guard dOut.count > 0 else { return }
    _ = try shaderUInt(max(dOut.count, dTable.count), op)  // flat element indices
    try dispatch("embedding_back", specialization: blockSpecialization,
                 bindings: [ids, dOut, dTable], push: push,
                 groups: try spreadGroups(ids.count, op: op))
  }

  private func embeddingPush(_ op: Op, _ ids: Tensor, _ table: Tensor) throws -> EmbeddingPush {
    EmbeddingPush(n: try shaderUInt(ids.count, op), cols: try shaderUInt(table.shape[1], op),
                  vocab: try shaderUInt(table.shape[0], op))
  }
}
