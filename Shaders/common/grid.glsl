// Workgroup size and flat indices over 2D dispatch grids.
//
// WG_SIZE is specialization constant 0, the x size of every 1D kernel's workgroup
// (`layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;`). Shaders use it
// instead of gl_WorkGroupSize.x: on the lavapipe used in CI the specialised
// gl_WorkGroupSize builtin read as its default 1 (caught by ElementwiseShaderTests).
//
// The host spreads workgroup counts above maxComputeWorkGroupCount[0] over y (Swift
// `VulkanBackend.spreadGroups`), so the last grid row may run past the end: every kernel
// bounds-checks the flat index it gets here.
layout(constant_id = 0) const uint WG_SIZE = 256;

// Linear index of this workgroup (x fastest).
uint wg_linear_id() {
  return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
}

// Linear index of this invocation in a 1D-workgroup kernel.
uint global_linear_id() {
  return wg_linear_id() * WG_SIZE + gl_LocalInvocationID.x;
}
