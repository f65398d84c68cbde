//! Simulated devices through the whole device pipeline: two spend 20 minutes 1 m apart, a third
//! stands 10 m away; the first's keys are published as a signed export (served by a test
//! double of the key server), the others sync, match and score. The near one is alerted, the
//! far one is not.

mod support;

use std::time::Duration;

use indicatif::ProgressBar;
use p256::ecdsa::SigningKey;
use rand_core::OsRng;
use support::Double;
use varsel_device::Clock;
use varsel_device::clock::ManualClock;
use varsel_device::radio::sim::{Carry, PathLossModel, Position};
use varsel_device::settings::{Settings, TrustedKeySetting};
use varsel_device::simulation::{SimDeviceId, Simulation};
use varsel_device::{Device, Error};
use varsel_protocol::export::{
    Compression, Export, ExportKey, ExportSigner, ReportType, TrustedKey, write_archive,
};

/// 2023-11-14 09:00 UTC: the contact happens in the morning.
const MORNING: u64 = 1_699_952_400;

/// The export a key server would publish for `device`'s keys: confirmed, onset today.
fn publish(device: &Device, signer: &ExportSigner, at: u64) -> Vec<u8> {
    let keys = device
        .store()
        .keys()
        .unwrap()
        .into_iter()
        .map(|key| ExportKey {
            key: key.tek.into_diagnosis_key(),
            transmission_risk_level: 0,
            rolling_start: key.window.start(),
            rolling_period: key.window.period(),
            report_type: Some(ReportType::ConfirmedTest),
            days_since_onset_of_symptoms: Some(0),
        })
        .collect();
    let export = Export {
        start_timestamp: at - 3_600,
        end_timestamp: at,
        region: "XX".into(),
        batch_num: 1,
        batch_size: 1,
        keys,
        ..Export::default()
    };
    write_archive(export, std::slice::from_ref(signer), Compression::Deflated).unwrap()
}

async fn sync(sim: &Simulation, id: SimDeviceId, double: &Double, signer: &ExportSigner) {
    let device = sim.device(id);
    let pem = TrustedKey::any_id(signer.verifying_key()).to_pem().unwrap();
    let settings = Settings {
        server_url: Some(double.url()),
        trusted_keys: vec![TrustedKeySetting {
            pem,
            key_id: None,
            key_version: None,
        }],
        ..Settings::default()
    };
    device.store().set_settings(&settings).unwrap();
    let client = device.client().unwrap();
    let mut handler = device.matching_handler().unwrap();
    device
        .sync(&client, &mut handler, &ProgressBar::hidden())
        .await
        .unwrap();
}

#[tokio::test]
async fn near_contact_alerts_and_far_one_does_not() -> Result<(), Error> {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let clock = ManualClock::new(MORNING);
    let mut sim = Simulation::new(clock.clone(), PathLossModel::default(), 42);
    let reporter = sim.add_device(dirs[0].path(), Position::new(0.0, 0.0), Carry::Hand)?;
    let near = sim.add_device(dirs[1].path(), Position::new(1.0, 0.0), Carry::Hand)?;
    let far = sim.add_device(dirs[2].path(), Position::new(0.0, 10.0), Carry::Pocket)?;
    sim.run_for(Duration::from_secs(20 * 60)).await?;

    let double = Double::start().await;
    let signer = ExportSigner::new(SigningKey::random(&mut OsRng), "XX", "v1");
    clock.advance(Duration::from_secs(6 * 3_600));
    double.put_file("1.zip", publish(sim.device(reporter), &signer, clock.now()));
    double.put_file("index.txt", b"1.zip\n".to_vec());
    for id in [near, far] {
        sync(&sim, id, &double, &signer).await;
    }

    let near_days = sim.device(near).exposures()?;
    let far_days = sim.device(far).exposures()?;
    eprintln!("near: {near_days:?}\nfar: {far_days:?}");
    assert_eq!(near_days.len(), 1);
    assert!(near_days[0].alert, "{near_days:?}");
    assert!((15..=30).contains(&near_days[0].minutes), "{near_days:?}");
    assert!(far_days.iter().all(|day| !day.alert), "{far_days:?}");
    let received = double.received();
    assert_eq!(
        received.len(),
        4,
        "each syncing device fetched the index and one file"
    );
    assert!(
        received
            .iter()
            .all(|r| r.method == "GET" && r.path.starts_with("/exports/"))
    );
    Ok(())
}
