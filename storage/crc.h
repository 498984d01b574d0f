/*
 * Checksums of stored messages, for every backend (storage/). Pure; any thread.
 *
 * CRC-32C (Castagnoli, the polynomial of iSCSI, ext4, Kafka and NATS JetStream) with the CPU's
 * CRC32 instruction where there is one: directly for short buffers, through ISA-L (libisal, which
 * picks the fastest version at run time) for long ones.
 */
#ifndef WSQ_STORAGE_CRC_H
#define WSQ_STORAGE_CRC_H

#include <stddef.h>
#include <stdint.h>

/* The CRC-32C of data[0..len) continued from crc, the CRC-32C of what came before (0 to
 * start): wsq__crc32c(wsq__crc32c(0, a), b) is the CRC-32C of a followed by b, and
 * wsq__crc32c(0, "123456789", 9) is 0xE3069283. */
uint32_t wsq__crc32c(uint32_t crc, const void *data, size_t len);

/* A message's checksum, from the CRC-32C of its payload (computed where the message enters wsq,
 * see wsq_wreq_t.crc): the payload's CRC continued over the timestamp (8 bytes, little-endian)
 * and the user flags (WSQ_MSG_*, 4 bytes, little-endian), so that a flipped bit there is caught
 * too. */
uint32_t wsq__msg_crc_seal(uint32_t payload_crc, int64_t ts_ms, uint32_t user_flags);

#endif
