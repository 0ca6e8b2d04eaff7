//! Integrity of a fetched package: its sha256 against the `.sha256`
//! published beside it, and its minisign signature (minisign-verify)
//! against the source's public keys. Nothing is unpacked before both
//! pass.

use super::s3::source_error;
use corral_protocol::error::CorralError;
use std::io::Read;

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest a `.sha256` file declares: `sha256sum` output (`HEX  name`)
/// or the bare hex.
pub fn parse_sha256_file(source: &str, key: &str, text: &[u8]) -> Result<String, CorralError> {
    let text = std::str::from_utf8(text).unwrap_or("");
    let token = text.split_whitespace().next().unwrap_or("");
    if token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(token.to_ascii_lowercase())
    } else {
        Err(source_error(
            source,
            "invalid_object",
            format!("{key} does not hold a sha256 (64 hex digits)"),
        ))
    }
}

pub fn check_sha256(
    source: &str,
    key: &str,
    declared: &str,
    actual: &str,
) -> Result<(), CorralError> {
    if declared == actual {
        Ok(())
    } else {
        Err(source_error(
            source,
            "digest_mismatch",
            format!("{key} has sha256 {actual}, but its .sha256 says {declared}"),
        ))
    }
}

/// Verifies `file` against a `.minisig` with any of `keys`.
pub fn check_signature(
    source: &str,
    key: &str,
    file: &std::path::Path,
    signature: &[u8],
    keys: &[minisign_verify::PublicKey],
) -> Result<(), CorralError> {
    let invalid = |why: String| source_error(source, "signature_invalid", format!("{key}: {why}"));
    let text =
        std::str::from_utf8(signature).map_err(|_| invalid("the .minisig is not text".into()))?;
    let signature = minisign_verify::Signature::decode(text)
        .map_err(|e| invalid(format!("the .minisig does not decode: {e}")))?;
    let mut last = String::from("no public key is configured");
    for pk in keys {
        match verify_file(pk, &signature, file) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(invalid(format!(
        "no configured key verifies the signature ({last})"
    )))
}

fn verify_file(
    pk: &minisign_verify::PublicKey,
    signature: &minisign_verify::Signature,
    file: &std::path::Path,
) -> Result<(), String> {
    let mut verifier = pk.verify_stream(signature).map_err(|e| e.to_string())?;
    let mut f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        verifier.update(&buf[..n]);
    }
    verifier.finalize().map_err(|e| e.to_string())
}
