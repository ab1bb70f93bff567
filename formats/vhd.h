/* vhd.h - on-disk layout of Microsoft's Virtual Hard Disk (VHD, qemu's
 * "vpc"), shared by the reader and writer in vhd.c. All fields are
 * big-endian. Spec: Microsoft "Virtual Hard Disk Image Format Specification"
 * 1.0 (2006); qemu block/vpc.c for the virtual-size rules. */
#ifndef AMIPORT_VHD_H
#define AMIPORT_VHD_H

#include <stdint.h>

#define VHD_SECTOR 512u
#define VHD_FOOTER_SIZE 512u
#define VHD_DYN_HEADER_SIZE 1024u
#define VHD_BAT_UNUSED 0xffffffffu
#define VHD_DEFAULT_BLOCK (2u << 20)
/* qemu's limits: the largest CHS geometry, and 2040 GiB. */
#define VHD_CHS_MAX_C 65535u
#define VHD_CHS_MAX_H 16u
#define VHD_CHS_MAX_S 255u
#define VHD_MAX_GEOMETRY (65535ull * 16 * 255)
#define VHD_MAX_SECTORS 0xff000000ull

enum vhd_type { VHD_FIXED = 2, VHD_DYNAMIC = 3, VHD_DIFFERENCING = 4 };

/* Footer field offsets. */
enum {
  VF_COOKIE = 0, VF_FEATURES = 8, VF_VERSION = 12, VF_DATA_OFFSET = 16, VF_TIMESTAMP = 24,
  VF_CREATOR_APP = 28, VF_CREATOR_VERSION = 32, VF_CREATOR_OS = 36, VF_ORIG_SIZE = 40,
  VF_CURRENT_SIZE = 48, VF_CYLS = 56, VF_HEADS = 58, VF_SECS = 59, VF_TYPE = 60,
  VF_CHECKSUM = 64, VF_UUID = 68, VF_SAVED_STATE = 84,
};

/* Dynamic disk header field offsets. */
enum {
  VD_COOKIE = 0, VD_DATA_OFFSET = 8, VD_TABLE_OFFSET = 16, VD_VERSION = 24,
  VD_MAX_ENTRIES = 28, VD_BLOCK_SIZE = 32, VD_CHECKSUM = 36, VD_PARENT_UUID = 40,
  VD_PARENT_TIMESTAMP = 56, VD_PARENT_NAME = 64, VD_PARENT_NAME_LEN = 512,
  VD_LOCATORS = 576, VD_LOCATOR_SIZE = 24, VD_NLOCATORS = 8,
};

/* Parent locator platform codes. */
#define VHD_PLAT_W2RU 0x57327275u /* "W2ru": relative Windows path, UTF-16LE */
#define VHD_PLAT_W2KU 0x57326b75u /* "W2ku": absolute Windows path, UTF-16LE */
#define VHD_PLAT_MACX 0x4d616358u /* "MacX": file URL, UTF-8 */

#endif
