// Registers apache-arrow's LZ4_FRAME and ZSTD body codecs (lz4js, pure JS; @bokuweb/zstd-wasm, wasm).
import * as arrow from 'apache-arrow';
import lz4 from 'lz4js';
import * as zstd from '@bokuweb/zstd-wasm';

await zstd.init();

arrow.compressionRegistry.set(arrow.CompressionType.LZ4_FRAME, {
    encode: (data) => Uint8Array.from(lz4.compress(data)),
    decode: (data) => Uint8Array.from(lz4.decompress(data)),
});
arrow.compressionRegistry.set(arrow.CompressionType.ZSTD, {
    encode: (data) => zstd.compress(data, 3),
    decode: (data) => zstd.decompress(data),
});
