// Push-constant block shared by every shader (see Shaders/README.md).
// boff[i]: offset, in 32-bit words, of binding i's first element within its bound range.
// Usage:
//   PUSH_BEGIN
//     uint n;
//     float alpha;
//   PUSH_END
//   ... a[pc.boff[0] + i] ...
#define PUSH_BEGIN layout(push_constant) uniform PushConstants { uint boff[8];
#define PUSH_END } pc;
