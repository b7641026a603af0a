//! Compiles the snapshot protobuf with protox (pure Rust), so a fresh machine
//! needs no system `protoc`.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "gatehouse/snapshot/v1/snapshot.proto";
    println!("cargo:rerun-if-changed=proto/{proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("snapshot_descriptor.bin");
    fs::write(&descriptor_path, descriptors.encode_to_vec())?;

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .build_server(false)
        .compile_protos(&[format!("proto/{proto}")], &["proto".to_string()])?;

    // The server once more, on its own: it sends snapshots encoded once for
    // every data plane of a group (`EncodedSnapshot`, `encoded.rs`), and
    // uses the messages generated above.
    let server = out.join("server");
    fs::create_dir_all(&server)?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .build_client(false)
        .out_dir(&server)
        .extern_path(".gatehouse.snapshot.v1", "crate")
        .extern_path(".gatehouse.snapshot.v1.Snapshot", "crate::EncodedSnapshot")
        .codec_path("crate::encoded::SnapshotServerCodec")
        .compile_protos(&[format!("proto/{proto}")], &["proto".to_string()])?;

    pbjson_build::Builder::new()
        .register_descriptors(&fs::read(&descriptor_path)?)?
        .build(&[".gatehouse.snapshot.v1"])?;
    Ok(())
}
