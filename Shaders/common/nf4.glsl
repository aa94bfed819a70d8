// NF4 codebook (bitsandbytes get_4bit_type("nf4")). Mirrors NF4.codebook in
// Sources/VKFCore/NF4.swift; a test checks the two agree value for value.
const float NF4_CODE[16] = float[16](
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
  -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0);

// Index of element e in packed NF4 words (4 bytes, 8 elements per uint; byte b holds
// elements 2b (high nibble) and 2b+1 (low nibble); bytes are little-endian in the word).
uint nf4_index(uint word, uint e_in_word) {
  uint byte_val = (word >> (8u * (e_in_word >> 1u))) & 0xFFu;
  return (e_in_word & 1u) == 0u ? (byte_val >> 4u) : (byte_val & 0xFu);
}

// Double-quantised block scales (NF4DoubleQuant in Sources/VKFCore/NF4DoubleQuant.swift):
// bitsandbytes' signed 8-bit dynamic map as f32 bit patterns (exact, whatever a compiler does
// with decimal literals), sorted; a test checks them against NF4DoubleQuant.dynamicMap.
const uint NF4_DQ_MAP[256] = uint[256](
  0xbf7e3333u, 0xbf7a999au, 0xbf770000u, 0xbf736666u, 0xbf6fcccdu, 0xbf6c3333u, 0xbf68999au, 0xbf650000u,
  0xbf616666u, 0xbf5dcccdu, 0xbf5a3333u, 0xbf56999au, 0xbf530000u, 0xbf4f6666u, 0xbf4bcccdu, 0xbf483333u,
  0xbf44999au, 0xbf410000u, 0xbf3d6666u, 0xbf39cccdu, 0xbf363334u, 0xbf32999au, 0xbf2f0000u, 0xbf2b6666u,
  0xbf27cccdu, 0xbf243334u, 0xbf20999au, 0xbf1d0000u, 0xbf196666u, 0xbf15cccdu, 0xbf123334u, 0xbf0e999au,
  0xbf0b0000u, 0xbf076666u, 0xbf03ccccu, 0xbf003333u, 0xbef93332u, 0xbef20000u, 0xbeeaccccu, 0xbee3999au,
  0xbedc6666u, 0xbed53333u, 0xbece0000u, 0xbec6ccccu, 0xbebf999au, 0xbeb86666u, 0xbeb13333u, 0xbeaa0000u,
  0xbea2ccccu, 0xbe9b999au, 0xbe946666u, 0xbe8d3334u, 0xbe860000u, 0xbe7d9999u, 0xbe6f3333u, 0xbe60cccdu,
  0xbe526666u, 0xbe440000u, 0xbe35999au, 0xbe273333u, 0xbe18cccdu, 0xbe0a6666u, 0xbdf80000u, 0xbddb3334u,
  0xbdc9eb85u, 0xbdc428f7u, 0xbdbe6667u, 0xbdb8a3d7u, 0xbdb2e148u, 0xbdad1eb8u, 0xbda75c2au, 0xbda1999au,
  0xbd9bd70au, 0xbd96147bu, 0xbd9051ebu, 0xbd8a8f5du, 0xbd84cccdu, 0xbd7e147bu, 0xbd728f5du, 0xbd670a3du,
  0xbd5b851fu, 0xbd500000u, 0xbd447ae1u, 0xbd38f5c3u, 0xbd2d70a3u, 0xbd21eb85u, 0xbd166667u, 0xbd0ae148u,
  0xbcfeb852u, 0xbce7ae15u, 0xbcd0a3d7u, 0xbcb9999au, 0xbca28f5du, 0xbc8b851fu, 0xbc68f5c3u, 0xbc3ae148u,
  0xbc1f3b64u, 0xbc160418u, 0xbc0ccccdu, 0xbc039581u, 0xbbf4bc6au, 0xbbe24dd3u, 0xbbcfdf3bu, 0xbbbd70a4u,
  0xbbab020du, 0xbb989374u, 0xbb8624ddu, 0xbb676c8au, 0xbb428f5cu, 0xbb1db22du, 0xbaf1a9fcu, 0xbaa7ef9du,
  0xba7765ffu, 0xba59e83eu, 0xba3c6a80u, 0xba1eecc1u, 0xba016f01u, 0xb9c7e283u, 0xb98ce705u, 0xb923d70bu,
  0xb8ba1f4bu, 0xb88aefb3u, 0xb8378034u, 0xb7b24206u, 0xb70205ffu, 0xb65a1a94u, 0xb513a3b7u, 0x00000000u,
  0x3513a3b7u, 0x365a1a94u, 0x370205ffu, 0x37b24206u, 0x38378034u, 0x388aefb3u, 0x38ba1f4bu, 0x3923d70bu,
  0x398ce705u, 0x39c7e283u, 0x3a016f01u, 0x3a1eecc1u, 0x3a3c6a80u, 0x3a59e83eu, 0x3a7765ffu, 0x3aa7ef9du,
  0x3af1a9fcu, 0x3b1db22du, 0x3b428f5cu, 0x3b676c8au, 0x3b8624ddu, 0x3b989374u, 0x3bab020du, 0x3bbd70a4u,
  0x3bcfdf3bu, 0x3be24dd3u, 0x3bf4bc6au, 0x3c039581u, 0x3c0ccccdu, 0x3c160418u, 0x3c1f3b64u, 0x3c3ae148u,
  0x3c68f5c3u, 0x3c8b851fu, 0x3ca28f5du, 0x3cb9999au, 0x3cd0a3d7u, 0x3ce7ae15u, 0x3cfeb852u, 0x3d0ae148u,
  0x3d166667u, 0x3d21eb85u, 0x3d2d70a3u, 0x3d38f5c3u, 0x3d447ae1u, 0x3d500000u, 0x3d5b851fu, 0x3d670a3du,
  0x3d728f5du, 0x3d7e147bu, 0x3d84cccdu, 0x3d8a8f5du, 0x3d9051ebu, 0x3d96147bu, 0x3d9bd70au, 0x3da1999au,
  0x3da75c2au, 0x3dad1eb8u, 0x3db2e148u, 0x3db8a3d7u, 0x3dbe6667u, 0x3dc428f7u, 0x3dc9eb85u, 0x3ddb3334u,
  0x3df80000u, 0x3e0a6666u, 0x3e18cccdu, 0x3e273333u, 0x3e35999au, 0x3e440000u, 0x3e526666u, 0x3e60cccdu,
  0x3e6f3333u, 0x3e7d9999u, 0x3e860000u, 0x3e8d3334u, 0x3e946666u, 0x3e9b999au, 0x3ea2ccccu, 0x3eaa0000u,
  0x3eb13333u, 0x3eb86666u, 0x3ebf999au, 0x3ec6ccccu, 0x3ece0000u, 0x3ed53333u, 0x3edc6666u, 0x3ee3999au,
  0x3eeaccccu, 0x3ef20000u, 0x3ef93332u, 0x3f003333u, 0x3f03ccccu, 0x3f076666u, 0x3f0b0000u, 0x3f0e999au,
  0x3f123334u, 0x3f15cccdu, 0x3f196666u, 0x3f1d0000u, 0x3f20999au, 0x3f243334u, 0x3f27cccdu, 0x3f2b6666u,
  0x3f2f0000u, 0x3f32999au, 0x3f363334u, 0x3f39cccdu, 0x3f3d6666u, 0x3f410000u, 0x3f44999au, 0x3f483333u,
  0x3f4bcccdu, 0x3f4f6666u, 0x3f530000u, 0x3f56999au, 0x3f5a3333u, 0x3f5dcccdu, 0x3f616666u, 0x3f650000u,
  0x3f68999au, 0x3f6c3333u, 0x3f6fcccdu, 0x3f736666u, 0x3f770000u, 0x3f7a999au, 0x3f7e3333u, 0x3f800000u);

// Absmax of block b from the code word holding its u8 code (codes packed 4 per uint, byte
// b & 3, little-endian), its nested f32 scale and the offset: map[code]·scale + offset with
// the product rounded before the add, as bitsandbytes and the CPU twin compute it.
float nf4_dq_absmax(uint codeWord, uint b, float nestedScale, float offset) {
  uint code = (codeWord >> (8u * (b & 3u))) & 0xFFu;
  precise float scaled = uintBitsToFloat(NF4_DQ_MAP[code]) * nestedScale;
  precise float absmaxValue = scaled + offset;
  return absmaxValue;
}

// NF4_ABSMAX(slot, nestedSlot) declares the absmax bindings of a kernel and
// `float block_absmax(uint b)`: the f32 absmax at binding `slot`, or (NF4_DQ = 1) the u8 codes
// at `slot` and the nested f32 scales at `nestedSlot`, decoded with nf4_dq_absmax. The kernel's
// push block must end with `uint nestedBlock; float absmaxOffset;` (Swift `NF4AbsmaxPush`).
#if defined(NF4_DQ) && NF4_DQ
#define NF4_ABSMAX(slot, nestedSlot) \
  layout(set = 0, binding = slot) readonly buffer AbsmaxCodes { uint absmaxCodes[]; }; \
  layout(set = 0, binding = nestedSlot) readonly buffer NestedScales { float nestedScales[]; }; \
  float block_absmax(uint b) { \
    return nf4_dq_absmax(absmaxCodes[pc.boff[slot] + (b >> 2u)], b, \
                         nestedScales[pc.boff[nestedSlot] + b / pc.nestedBlock], pc.absmaxOffset); \
  }
#else
#define NF4_ABSMAX(slot, nestedSlot) \
  layout(set = 0, binding = slot) readonly buffer Absmax { float absmax[]; }; \
  float block_absmax(uint b) { return absmax[pc.boff[slot] + b]; }
#endif
