//! The whole system across crates, with real parts: a key server on 127.0.0.1 with sled
//! databases in a temporary directory, three simulated phones and one clock that the server
//! and the phones share. Alice and Bob spend 20 minutes 1 m apart, Carol stands 10 m away with
//! her phone in her pocket; Alice reports through the server with a code the test centre
//! issued over HTTP; the export worker publishes; Bob and Carol sync over HTTP. Bob is
//! alerted, Carol is not, and every request a phone sent is in its transparency log, matches
//! what the server received, and carries no identifier any phone heard.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use varsel::scenario::{
    Options, Placement, Role, Sender, World, carries, identifier_forms, log_matches,
    only_sync_downloads,
};
use varsel_device::radio::sim::Carry;
use varsel_device::transparency::Purpose;
use varsel_protocol::export::ReportType;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_contact_is_alerted_through_a_real_key_server_and_far_one_is_not() {
    let mut world = World::start(Options::default()).await.unwrap();

    // Twenty minutes together: the phones hear each other and send nothing.
    world.meet().await.unwrap();
    assert!(
        world
            .heard(Role::NearContact, Role::Reporter)
            .unwrap()
            .len()
            >= 8
    );
    assert!(world.traffic().is_empty(), "{:?}", world.traffic());

    // The test centre issues a code over HTTP with its API key; Alice reports with it.
    let code = world.issue_code().await.unwrap();
    assert_eq!(world.received_from(Sender::Authority).len(), 1);
    let outcome = world.report(&code).await.unwrap();
    assert_eq!(outcome.keys, 1, "one day of keys");
    assert_eq!(outcome.inserted, Some(1));
    assert_eq!(outcome.test_type.as_deref(), Some("confirmed"));
    let routes: Vec<_> = world
        .received_from(Sender::Phone(Role::Reporter))
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(routes, ["/api/verify", "/api/certificate", "/v1/publish"]);

    // The key is still in use that evening: the worker holds it back.
    let evening = world.export_evening().unwrap();
    assert!(evening.files_written.is_empty(), "{evening:?}");
    assert!(world.server().published().unwrap().is_empty());

    // The next morning it is published, padded, with the diagnosis from the code.
    let morning = world.export_morning().unwrap();
    assert_eq!(morning.files_written.len(), 1, "{morning:?}");
    let published = world.server().published().unwrap();
    let keys = &published[0].1.export.keys;
    assert!((1_000..=1_100).contains(&keys.len()), "{} keys", keys.len());
    let alice = world
        .meeting_day_key()
        .unwrap()
        .expect("Alice had a key at the meeting");
    let exported = keys
        .iter()
        .find(|key| key.key == alice)
        .expect("Alice's key is published");
    assert_eq!(exported.report_type, Some(ReportType::ConfirmedTest));
    assert_eq!(
        exported.days_since_onset_of_symptoms,
        Some(0),
        "symptoms began that day"
    );

    // Bob and Carol sync over HTTP, verifying the server's signatures.
    for role in [Role::NearContact, Role::FarContact] {
        let report = world.sync(role).await.unwrap();
        assert_eq!(report.processed.len(), 1, "{report:?}");
        assert!(report.rejected.is_empty(), "{report:?}");
    }

    // Bob: 20 minutes, very close, alerted. Carol: heard at most faintly, not alerted.
    let bob = world.exposures(Role::NearContact).unwrap();
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert!(bob[0].alert, "{bob:?}");
    assert!((15..=30).contains(&bob[0].minutes), "{bob:?}");
    assert_eq!(bob[0].date, world.options().timeline.meeting_date());
    let near_max = world
        .risk(Role::NearContact)
        .unwrap()
        .attenuation
        .near_max_db;
    assert!(bob[0].closest_attenuation_db <= near_max, "{bob:?}");
    let carol = world.exposures(Role::FarContact).unwrap();
    assert!(carol.iter().all(|day| !day.alert), "{carol:?}");
    let carol_windows = world.windows(Role::FarContact).unwrap();
    let carol_scans = carol_windows
        .iter()
        .flat_map(|window| &window.scan_instances);
    assert!(
        carol_scans
            .clone()
            .all(|scan| scan.typical_attenuation_db > near_max)
    );

    // Every request each phone sent is in its log, as the server received it.
    let host = world.server().address().to_string();
    for role in Role::ALL {
        let log = world.log(role).unwrap();
        let received = world.received_from(Sender::Phone(role));
        log_matches(&log, &received, &host).unwrap();
    }
    let alice_log = world.log(Role::Reporter).unwrap();
    assert!(
        alice_log
            .iter()
            .all(|entry| entry.purpose == Purpose::Report)
    );

    // Without upload consent, Bob and Carol sent nothing but the index and the file.
    for role in [Role::NearContact, Role::FarContact] {
        let log = world.log(role).unwrap();
        only_sync_downloads(&log, &world.received_from(Sender::Phone(role))).unwrap();
        assert_eq!(log.len(), 2, "{log:?}");
    }
    assert!(world.received_from(Sender::Unexpected).is_empty());
    assert_eq!(world.traffic().len(), 1 + 3 + 2 + 2);

    // No identifier any phone heard is in any request, though the search finds what is there:
    // Alice's own key travelled in her publish request.
    assert_eq!(world.identifier_leaks().unwrap(), Vec::<String>::new());
    let publish = world.received_from(Sender::Phone(Role::Reporter))[2].clone();
    let own_key = STANDARD.encode(alice.as_bytes());
    assert!(String::from_utf8_lossy(&publish.body).contains(&own_key));
    assert!(carries(&publish.body, &identifier_forms(alice.as_bytes())));

    // The demo's verdict agrees.
    assert_eq!(world.problems().unwrap(), Vec::<String>::new());
    world.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_notices_when_the_far_contact_is_close() {
    let options = Options {
        far_contact: Placement {
            distance_m: 1.0,
            carry: Carry::Hand,
        },
        ..Options::default()
    };
    let mut world = World::start(options).await.unwrap();
    world.meet().await.unwrap();
    let code = world.issue_code().await.unwrap();
    world.report(&code).await.unwrap();
    world.export_morning().unwrap();
    for role in [Role::NearContact, Role::FarContact] {
        world.sync(role).await.unwrap();
    }

    assert!(
        world
            .exposures(Role::FarContact)
            .unwrap()
            .iter()
            .any(|day| day.alert)
    );
    let problems = world.problems().unwrap();
    assert_eq!(problems, ["Carol, 1 m from Alice, got an alert"]);
    world.stop().await.unwrap();
}
