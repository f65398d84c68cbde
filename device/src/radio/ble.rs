//! Real Bluetooth LE: scanning through btleplug (BlueZ over D-Bus on Linux, CoreBluetooth on
//! Apple platforms, WinRT on Windows) for Exposure Notification service data under UUID 0xFD6F,
//! and on Linux advertising through BlueZ's `LEAdvertisingManager1` with the bluer crate.
//!
//! # Limitations
//!
//! btleplug is a central-role library: it scans but cannot advertise, so advertising works only
//! on Linux, where [`BleRadio::advertise`] registers a broadcast advertisement (service UUID
//! `fd6f`, service data `RPI ‖ AEM`) with BlueZ 5.48 or later and registers it again whenever
//! the identifier changes. That needs permission to use the adapter (root or the `bluetooth`
//! group). Elsewhere `advertise` fails with [`Error::Radio`]; on phones the operating system's
//! Exposure Notification framework advertises, and apps cannot broadcast under 0xFD6F
//! themselves. No adapter exists where this crate is tested, so this module is compiled but not
//! run by the tests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use btleplug::api::bleuuid::uuid_from_u16;
use btleplug::api::{Central, CentralEvent, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use futures::StreamExt;
use varsel_protocol::advertisement::{Advertisement, SERVICE_UUID};

use super::Radio;
use crate::Error;
use crate::clock::Clock;
use crate::sighting::Sighting;

/// A Bluetooth LE adapter used through btleplug (and BlueZ, on Linux, to advertise).
pub struct BleRadio {
    adapter: Adapter,
    clock: Arc<dyn Clock>,
    #[cfg(target_os = "linux")]
    advertiser: Option<linux::Advertiser>,
}

impl std::fmt::Debug for BleRadio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BleRadio").finish_non_exhaustive()
    }
}

fn radio_error(error: btleplug::Error) -> Error {
    Error::Radio(error.to_string())
}

impl BleRadio {
    /// The system's first Bluetooth adapter.
    ///
    /// # Errors
    ///
    /// [`Error::Radio`] when there is no Bluetooth service or no adapter.
    pub async fn first_adapter(clock: Arc<dyn Clock>) -> Result<Self, Error> {
        let manager = Manager::new().await.map_err(radio_error)?;
        let adapter = manager
            .adapters()
            .await
            .map_err(radio_error)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Radio("no Bluetooth adapter found".into()))?;
        Ok(Self {
            adapter,
            clock,
            #[cfg(target_os = "linux")]
            advertiser: None,
        })
    }

    /// The last RSSI the adapter reported for a peripheral, if any.
    async fn rssi_of(&self, id: &PeripheralId, seen: &HashMap<PeripheralId, i16>) -> Option<i16> {
        if let Some(rssi) = seen.get(id) {
            return Some(*rssi);
        }
        let peripheral = self.adapter.peripheral(id).await.ok()?;
        peripheral.properties().await.ok()??.rssi
    }
}

impl Radio for BleRadio {
    #[cfg(target_os = "linux")]
    async fn advertise(&mut self, advertisement: &Advertisement) -> Result<(), Error> {
        if self.advertiser.is_none() {
            self.advertiser = Some(linux::Advertiser::open().await?);
        }
        match self.advertiser.as_mut() {
            Some(advertiser) => advertiser.advertise(advertisement).await,
            None => Err(Error::Radio("no advertiser".into())),
        }
    }

    #[cfg(not(target_os = "linux"))]
    async fn advertise(&mut self, _advertisement: &Advertisement) -> Result<(), Error> {
        Err(Error::Radio(
            "advertising is implemented only on Linux; see the BleRadio documentation".into(),
        ))
    }

    async fn scan(&mut self, window: Duration) -> Result<Vec<Sighting>, Error> {
        let uuid = uuid_from_u16(SERVICE_UUID);
        let mut events = self.adapter.events().await.map_err(radio_error)?;
        let filter = ScanFilter {
            services: vec![uuid],
        };
        self.adapter.start_scan(filter).await.map_err(radio_error)?;

        let deadline = tokio::time::Instant::now() + window;
        let mut rssi = HashMap::new();
        let mut heard = Vec::new();
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await {
            match event {
                CentralEvent::RssiUpdate { id, rssi: value } => {
                    rssi.insert(id, value);
                }
                CentralEvent::ServiceDataAdvertisement { id, service_data } => {
                    let Some(data) = service_data.get(&uuid) else {
                        continue;
                    };
                    // Malformed service data from a stranger is ignored, not an error.
                    let Ok(advertisement) = Advertisement::from_service_data(SERVICE_UUID, data)
                    else {
                        continue;
                    };
                    let Some(value) = self.rssi_of(&id, &rssi).await else {
                        continue;
                    };
                    heard.push(Sighting {
                        rpi: advertisement.rpi,
                        aem: advertisement.aem,
                        rssi: value,
                        time: self.clock.now(),
                    });
                }
                _ => {}
            }
        }
        self.adapter.stop_scan().await.map_err(radio_error)?;
        Ok(heard)
    }
}

/// Advertising through BlueZ's `LEAdvertisingManager1`.
#[cfg(target_os = "linux")]
mod linux {
    use std::collections::{BTreeMap, BTreeSet};

    use bluer::adv::{Advertisement as LeAdvertisement, AdvertisementHandle, Type};
    use btleplug::api::bleuuid::uuid_from_u16;
    use varsel_protocol::advertisement::{Advertisement, SERVICE_UUID};

    use crate::Error;

    fn radio_error(error: bluer::Error) -> Error {
        Error::Radio(error.to_string())
    }

    /// The registered advertisement; dropping its handle unregisters it.
    pub(super) struct Advertiser {
        adapter: bluer::Adapter,
        current: Option<(Advertisement, AdvertisementHandle)>,
        _session: bluer::Session,
    }

    impl Advertiser {
        /// Connects to BlueZ and powers on the default adapter.
        pub(super) async fn open() -> Result<Self, Error> {
            let session = bluer::Session::new().await.map_err(radio_error)?;
            let adapter = session.default_adapter().await.map_err(radio_error)?;
            adapter.set_powered(true).await.map_err(radio_error)?;
            Ok(Self {
                adapter,
                current: None,
                _session: session,
            })
        }

        /// Broadcasts `advertisement`, replacing the one before when it changed.
        pub(super) async fn advertise(
            &mut self,
            advertisement: &Advertisement,
        ) -> Result<(), Error> {
            if self
                .current
                .as_ref()
                .is_some_and(|(now, _)| now == advertisement)
            {
                return Ok(());
            }
            self.current = None;
            let uuid = uuid_from_u16(SERVICE_UUID);
            let data = advertisement.to_service_data().to_vec();
            let broadcast = LeAdvertisement {
                advertisement_type: Type::Broadcast,
                service_uuids: BTreeSet::from([uuid]),
                service_data: BTreeMap::from([(uuid, data)]),
                discoverable: Some(false),
                ..LeAdvertisement::default()
            };
            let handle = self
                .adapter
                .advertise(broadcast)
                .await
                .map_err(radio_error)?;
            self.current = Some((*advertisement, handle));
            Ok(())
        }
    }
}
