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
