//! `varsel export inspect`: every field of an export archive, and what its signatures say.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use varsel_protocol::export::{
    Export, ExportArchive, ExportKey, ExportLimits, SignatureCheck, SignatureStatus, TrustedKey,
    TrustedKeys,
};

/// Arguments of `varsel export inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The export archive (a zip holding export.bin and export.sig).
    file: PathBuf,
    /// A trusted public key (SubjectPublicKeyInfo PEM). With any given, a file that none of
    /// them verifies is an error.
    #[arg(long = "trusted-key", value_name = "PEM_FILE")]
    trusted_keys: Vec<PathBuf>,
}

/// Reads, checks and prints one archive.
pub fn run(args: &InspectArgs) -> Result<()> {
    let limits = ExportLimits::default();
    let size = std::fs::metadata(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?
        .len();
    if size > limits.max_archive_bytes as u64 {
        bail!(
            "{} is {size} bytes, above the {} byte limit",
            args.file.display(),
            limits.max_archive_bytes
        );
    }
    let zip =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let archive = ExportArchive::read(&zip, &limits)
        .with_context(|| format!("{} is not a valid export", args.file.display()))?;

    let trusted = read_trusted_keys(&args.trusted_keys)?;
    let checks = archive.check_signatures(&trusted);
    let verified = checks
        .iter()
        .any(|check| check.status == SignatureStatus::Verified);
    crate::print_json(&describe(&archive, &checks, !trusted.is_empty()))?;
    if !trusted.is_empty() && !verified {
        bail!(
            "no signature of {} verifies under a trusted key",
            args.file.display()
        );
    }
    Ok(())
}

fn read_trusted_keys(paths: &[PathBuf]) -> Result<TrustedKeys> {
    paths
        .iter()
        .map(|path| {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            TrustedKey::from_pem(&pem).with_context(|| format!("{}", path.display()))
        })
        .collect()
}

fn describe(archive: &ExportArchive, checks: &[SignatureCheck], have_keys: bool) -> Value {
    let export = &archive.export;
    json!({
        "export_bin": {
            "bytes": archive.export_bin_len,
            "sha256": hex::encode(archive.export_bin_sha256),
        },
        "start_timestamp": export.start_timestamp,
        "end_timestamp": export.end_timestamp,
        "region": export.region,
        "batch_num": export.batch_num,
        "batch_size": export.batch_size,
        "signature_infos": export.signature_infos.iter().map(|info| json!({
            "verification_key_id": info.verification_key_id,
            "verification_key_version": info.verification_key_version,
            "signature_algorithm": info.signature_algorithm,
        })).collect::<Vec<_>>(),
        "key_count": export.keys.len(),
        "revised_key_count": export.revised_keys.len(),
        "keys": keys(export, |export| &export.keys),
        "revised_keys": keys(export, |export| &export.revised_keys),
        "signatures": archive.signatures.iter().zip(checks).map(|(signature, check)| json!({
            "verification_key_id": check.info.verification_key_id,
            "verification_key_version": check.info.verification_key_version,
            "signature_algorithm": check.info.signature_algorithm,
            "batch_num": signature.batch_num,
            "batch_size": signature.batch_size,
            "signature_bytes": signature.signature.len(),
            "verified": check.status == SignatureStatus::Verified,
            "status": if have_keys { status_name(check.status) } else { "no trusted key given" },
        })).collect::<Vec<_>>(),
    })
}

fn keys(export: &Export, pick: fn(&Export) -> &Vec<ExportKey>) -> Vec<Value> {
    pick(export)
        .iter()
        .map(|key| {
            json!({
                "key_data": hex::encode(key.key.as_bytes()),
                "transmission_risk_level": key.transmission_risk_level,
                "rolling_start_interval_number": key.rolling_start.value(),
                "rolling_period": key.rolling_period,
                "report_type": key.report_type.map(|report_type| report_type.name()),
                "days_since_onset_of_symptoms": key.days_since_onset_of_symptoms,
            })
        })
        .collect()
}

fn status_name(status: SignatureStatus) -> &'static str {
    match status {
        SignatureStatus::Verified => "verified",
        SignatureStatus::UnsupportedAlgorithm => "unsupported algorithm",
        SignatureStatus::BatchMismatch => "batch number or size differs from the file",
        SignatureStatus::UnknownKey => "no trusted key under this id and version",
        SignatureStatus::Malformed => "not a DER-encoded P-256 signature",
        SignatureStatus::Invalid => "does not verify",
    }
}
