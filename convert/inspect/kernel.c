/* kernel.c - kernel image headers.
 * x86: Documentation/arch/x86/boot.rst (setup header "HdrS" at 0x202,
 * kernel_version at 0x20e, xloadflags at 0x236). arm64:
 * Documentation/arch/arm64/booting.rst (magic "ARM\x64" at 0x38). PE/COFF
 * machine types from the PE format; ELF e_machine from the ELF ABI. */
#include "kernel.h"

#include <string.h>

const char *pe_machine_arch(const uint8_t *h, size_t len)
{
  if (len < 0x40 || h[0] != 'M' || h[1] != 'Z')
    return NULL;
  uint32_t pe = le32(h + 0x3c);
  if (pe > len - 6 || memcmp(h + pe, "PE\0\0", 4) != 0)
    return NULL;
  switch (le16(h + pe + 4)) {
  case 0x8664: return "x86_64";
  case 0xaa64: return "arm64";
  case 0x014c: return "i386";
  case 0x01c4: return "arm";
  default: return "unknown";
  }
}

bool kernel_identify(const uint8_t *h, size_t len, struct kernel_id *k)
{
  *k = (struct kernel_id){ 0 };
  if (len >= 0x240 && memcmp(h + 0x202, "HdrS", 4) == 0) {
    k->kind = "bzImage";
    /* xloadflags bit 0: a 64-bit entry point (boot protocol 2.12+). */
    uint16_t proto = le16(h + 0x206);
    k->arch = proto >= 0x20c && (h[0x236] & 1) ? "x86_64" : "i386";
    uint32_t vo = (uint32_t)le16(h + 0x20e) + 0x200;
    if (le16(h + 0x20e) && vo < len) {
      size_t i = 0;
      while (vo + i < len && i + 1 < sizeof k->version && h[vo + i] > ' ' && h[vo + i] < 0x7f) {
        k->version[i] = (char)h[vo + i];
        i++;
      }
      k->version[i] = 0;
    }
    return true;
  }
  if (len >= 0x40 && memcmp(h + 0x38, "ARM\x64", 4) == 0) {
    k->kind = "arm64 Image";
    k->arch = "arm64";
    return true;
  }
  if (len >= 0x40 && h[0] == 'M' && h[1] == 'Z' && memcmp(h + 4, "zimg", 4) == 0) {
    k->kind = "EFI zboot";
    k->arch = pe_machine_arch(h, len);
    return true;
  }
  if (len >= 20 && memcmp(h, "\x7f" "ELF", 4) == 0) {
    k->kind = "ELF";
    uint16_t m = h[5] == 2 ? be16(h + 18) : le16(h + 18);
    k->arch = m == 62 ? "x86_64" : m == 183 ? "arm64" : m == 3 ? "i386" : NULL;
    return true;
  }
  return false;
}
