//! Marquee's gRPC API (`marquee.v1`): generated messages, clients and servers.

/// Version 1 of the API.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("marquee.v1");
}

/// On-disk record formats of the server's collections (internal, not an API).
pub mod storage {
    /// Version 1 of the storage format.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("marquee.storage.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Marquee proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/marquee_descriptor.bin"));
