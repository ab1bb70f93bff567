/* vhdx.h - on-disk layout of VHDX (Virtual Hard Disk v2), shared by the
 * reader (vhdx.c) and the writer (vhdx_write.c). All fields are
 * little-endian; GUIDs are stored as Windows lays them out (the first three
 * groups little-endian). Spec: [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File
 * Format", sections 2.1 to 2.6. */
#ifndef AMIPORT_VHDX_H
#define AMIPORT_VHDX_H

#include <stddef.h>
#include <stdint.h>

#define VHDX_KiB 1024ull
#define VHDX_MiB (1024ull * 1024)
#define VHDX_HEADER1_OFFSET (64 * VHDX_KiB)
#define VHDX_HEADER2_OFFSET (128 * VHDX_KiB)
#define VHDX_REGION1_OFFSET (192 * VHDX_KiB)
#define VHDX_REGION2_OFFSET (256 * VHDX_KiB)
#define VHDX_HEADER_SIZE (4 * VHDX_KiB)
#define VHDX_REGION_SIZE (64 * VHDX_KiB)
#define VHDX_REGION_MAX_ENTRIES 2047
#define VHDX_METADATA_TABLE_SIZE (64 * VHDX_KiB)
#define VHDX_METADATA_MAX_ENTRIES 2047
#define VHDX_MIN_BLOCK (1u << 20)
#define VHDX_MAX_BLOCK (256u << 20)
#define VHDX_MAX_SIZE (64ull << 40)   /* 64 TiB */
#define VHDX_LOG_SECTOR 4096u
#define VHDX_CHUNK_SECTORS (1ull << 23) /* sectors one sector bitmap block covers */

/* Header (2.2.2) field offsets. */
enum {
  VH_SIGNATURE = 0, VH_CHECKSUM = 4, VH_SEQUENCE = 8, VH_FILE_WRITE_GUID = 16,
  VH_DATA_WRITE_GUID = 32, VH_LOG_GUID = 48, VH_LOG_VERSION = 64, VH_VERSION = 66,
  VH_LOG_LENGTH = 68, VH_LOG_OFFSET = 72,
};

/* Region table (2.2.3): header, then 32-byte entries. */
enum { VR_SIGNATURE = 0, VR_CHECKSUM = 4, VR_ENTRY_COUNT = 8, VR_ENTRIES = 16, VR_ENTRY_SIZE = 32 };
enum { VRE_GUID = 0, VRE_OFFSET = 16, VRE_LENGTH = 24, VRE_REQUIRED = 28 };

/* Metadata table (2.6.1). */
enum { VM_SIGNATURE = 0, VM_ENTRY_COUNT = 10, VM_ENTRIES = 32, VM_ENTRY_SIZE = 32 };
enum { VME_ITEM = 0, VME_OFFSET = 16, VME_LENGTH = 20, VME_FLAGS = 24 };
enum { VME_IS_USER = 1, VME_IS_VIRTUAL_DISK = 2, VME_IS_REQUIRED = 4 };
enum { VFP_LEAVE_ALLOCATED = 1, VFP_HAS_PARENT = 2 }; /* file parameters flags */

/* Log entry (2.3.1). */
enum {
  VL_SIGNATURE = 0, VL_CHECKSUM = 4, VL_ENTRY_LENGTH = 8, VL_TAIL = 12, VL_SEQUENCE = 16,
  VL_DESCRIPTOR_COUNT = 24, VL_LOG_GUID = 32, VL_FLUSHED_OFFSET = 48, VL_LAST_OFFSET = 56,
  VL_HEADER_SIZE = 64, VL_DESCRIPTOR_SIZE = 32,
};

/* BAT entry (2.5.1): state in bits 0-2, file offset in MiB in bits 20-63. */
enum {
  VHDX_PAYLOAD_NOT_PRESENT = 0, VHDX_PAYLOAD_UNDEFINED = 1, VHDX_PAYLOAD_ZERO = 2,
  VHDX_PAYLOAD_UNMAPPED = 3, VHDX_PAYLOAD_FULLY_PRESENT = 6, VHDX_PAYLOAD_PARTIALLY_PRESENT = 7,
  VHDX_SB_NOT_PRESENT = 0, VHDX_SB_PRESENT = 6,
};
#define VHDX_BAT_STATE(e) ((unsigned)((e) & 7))
#define VHDX_BAT_OFFSET(e) ((e) & ~((1ull << 20) - 1))

/* GUIDs as stored on disk. */
extern const uint8_t vhdx_guid_bat[16], vhdx_guid_metadata[16], vhdx_guid_file_params[16],
    vhdx_guid_disk_size[16], vhdx_guid_disk_id[16], vhdx_guid_logical_sector[16],
    vhdx_guid_physical_sector[16], vhdx_guid_parent_locator[16];

/* CRC-32C of a buffer with its 4-byte checksum field at csum_off taken as zero. */
uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_off);

/* The writer (vhdx_write.c); the reader's vtable points at these. */
struct create_opts;
struct img;
struct error;
int vhdxw_create(struct img *im, uint64_t size, struct create_opts *o, struct error *e);
int vhdxw_pwrite(struct img *im, const void *buf, size_t len, uint64_t off, struct error *e);
int vhdxw_finish(struct img *im, struct error *e);
void vhdxw_close(struct img *im);
extern const char vhdxw_create_help[];

#endif
