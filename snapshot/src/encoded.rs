//! Snapshots encoded once, sent to many data planes.
//!
//! A group's whole snapshot goes to each of its data planes; with 10,000
//! routes and 100 data planes, encoding (or copying) it per stream would
//! cost a hundred times what one encoding does. The server's stream
//! therefore carries bytes encoded once and shared, and its codec writes
//! them as they are: a data plane receives exactly the `Snapshot` message
//! it would have received otherwise.

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::{
    Status,
    codec::{Codec, EncodeBuf, Encoder},
};
use tonic_prost::{ProstCodec, ProstDecoder};

use crate::{DataPlaneMessage, Snapshot};

/// A `Snapshot` message in its protobuf encoding; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedSnapshot(Bytes);

impl EncodedSnapshot {
    pub fn new(snapshot: &Snapshot) -> Self {
        Self(snapshot.encode_to_vec().into())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The message back, for tests and debugging.
    pub fn decode(&self) -> Result<Snapshot, prost::DecodeError> {
        Snapshot::decode(self.0.clone())
    }
}

/// The snapshot server's codec: encoded snapshots out, data plane messages
/// in (decoded as any prost message).
#[derive(Debug, Default, Clone, Copy)]
pub struct SnapshotServerCodec;

/// Writes an [`EncodedSnapshot`]'s bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct PreEncoded;

impl Encoder for PreEncoded {
    type Item = EncodedSnapshot;
    type Error = Status;

    fn encode(&mut self, item: EncodedSnapshot, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl Codec for SnapshotServerCodec {
    type Encode = EncodedSnapshot;
    type Decode = DataPlaneMessage;
    type Encoder = PreEncoded;
    type Decoder = ProstDecoder<DataPlaneMessage>;

    fn encoder(&mut self) -> PreEncoded {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<Snapshot, DataPlaneMessage>::default().decoder()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_are_the_message() {
        let snapshot = Snapshot {
            group: "g".into(),
            version: "v".into(),
            ..Default::default()
        };
        let encoded = EncodedSnapshot::new(&snapshot);
        assert_eq!(encoded.len(), snapshot.encoded_len());
        assert_eq!(encoded.decode().unwrap(), snapshot);
    }
}
