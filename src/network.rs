//! Beacon-chain clocks of the public Ethereum networks: genesis time and slot length, and the
//! timestamp → slot arithmetic the tracker needs to turn a payload timestamp into a slot.
//!
//! This module reads no clock and knows nothing of forks or epochs; it only maps unix seconds
//! to slots for `--network`, or for a custom `--genesis-time` / `--seconds-per-slot` pair.

use std::fmt;
use std::str::FromStr;

/// A beacon chain's clock: when slot 0 started and how long a slot lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Unix time (seconds) at which slot 0 began.
    pub genesis_time: u64,
    /// Length of one slot in seconds.
    pub seconds_per_slot: u64,
}

impl Chain {
    /// The slot containing `unix_secs`; `None` before genesis or when `seconds_per_slot` is 0.
    pub fn slot_of_timestamp(self, unix_secs: u64) -> Option<u64> {
        unix_secs
            .checked_sub(self.genesis_time)?
            .checked_div(self.seconds_per_slot)
    }
}

/// A public Ethereum network whose clock is built in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Network {
    /// Ethereum mainnet.
    Mainnet,
    /// The Sepolia testnet (applications).
    Sepolia,
    /// The Holešky testnet (staking), being retired in favour of Hoodi.
    Holesky,
    /// The Hoodi testnet (staking and infrastructure).
    Hoodi,
}

impl Network {
    /// Every built-in network, in the order they are listed to users.
    pub const ALL: [Network; 4] = [
        Network::Mainnet,
        Network::Sepolia,
        Network::Holesky,
        Network::Hoodi,
    ];

    /// The network's beacon-chain clock.
    pub fn chain(self) -> Chain {
        // Every network here uses the mainnet preset's 12-second slots.
        let genesis_time = match self {
            // 2020-12-01 12:00:23 UTC: the genesis state's `genesis_time` (MIN_GENESIS_TIME was
            // 1606824000; the eth1 block that triggered genesis set the extra 23 s). Sources:
            // Prysm's network reference ("Genesis 1 Dec 2020, 12:00:23 UTC") and
            // pon-network/mev-plus `GenesisTimeMainnet = 1606824023`. Cross-check: Electra epoch
            // 364032 → 1606824023 + 364032·32·12 = 1746612311, the mainnet Prague timestamp.
            Network::Mainnet => 1_606_824_023,
            // 2022-06-20 14:00:00 UTC. eth-clients/sepolia `metadata/README.md` lists
            // `genesis_time: 1655733600`; Lodestar's sepolia config has MIN_GENESIS_TIME
            // 1655647200 + GENESIS_DELAY 86400 = 1655733600. Cross-check: Electra epoch 222464
            // → 1741159776, the Sepolia Prague timestamp.
            Network::Sepolia => 1_655_733_600,
            // 2023-09-28 12:00:00 UTC. eth-clients/holesky README: "Launch Date: Sept/28, 2023,
            // 12:00 UTC, Linux Epoch time: 1695902400"; Lodestar's holesky config has
            // MIN_GENESIS_TIME 1695902100 + GENESIS_DELAY 300. Cross-check: Capella epoch 256
            // → 1696000704, the Holešky Shanghai timestamp.
            Network::Holesky => 1_695_902_400,
            // 2025-03-17 12:10:00 UTC. eth-clients/hoodi README: "Linux Epoch time: 1742213400";
            // Lodestar's hoodi config has MIN_GENESIS_TIME 1742212800 + GENESIS_DELAY 600.
            // Cross-check: Electra epoch 2048 → 1742999832, the Hoodi Prague timestamp.
            Network::Hoodi => 1_742_213_400,
        };
        Chain {
            genesis_time,
            seconds_per_slot: 12,
        }
    }

    /// The network's lowercase name, as accepted by `--network`.
    pub fn name(self) -> &'static str {
        match self {
            Network::Mainnet => "mainnet",
            Network::Sepolia => "sepolia",
            Network::Holesky => "holesky",
            Network::Hoodi => "hoodi",
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Network {
    type Err = NetworkError;

    /// Parses a network name; ASCII case is ignored so `Mainnet` works as well as `mainnet`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Network::ALL
            .into_iter()
            .find(|network| network.name().eq_ignore_ascii_case(s))
            .ok_or(NetworkError::Unknown)
    }
}

/// Why a network name was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkError {
    /// The name is none of the built-in networks.
    Unknown,
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkError::Unknown => {
                f.write_str("unknown network, expected one of: ")?;
                for (i, network) in Network::ALL.into_iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(network.name())?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECONDS_PER_EPOCH: u64 = 32 * 12;

    /// Each network's fork timestamp must fall exactly on the first slot of the fork's epoch.
    fn assert_fork(network: Network, fork_timestamp: u64, fork_epoch: u64) {
        let chain = network.chain();
        assert_eq!(
            chain.genesis_time + fork_epoch * SECONDS_PER_EPOCH,
            fork_timestamp,
            "{network}"
        );
        assert_eq!(
            chain.slot_of_timestamp(fork_timestamp),
            Some(fork_epoch * 32),
            "{network}"
        );
        // The last second of the previous slot still belongs to it.
        assert_eq!(
            chain.slot_of_timestamp(fork_timestamp - 1),
            Some(fork_epoch * 32 - 1),
            "{network}"
        );
    }

    #[test]
    fn mainnet_prague_timestamp_maps_to_electra_first_slot() {
        assert_fork(Network::Mainnet, 1_746_612_311, 364_032);
    }

    #[test]
    fn sepolia_prague_timestamp_maps_to_electra_first_slot() {
        assert_fork(Network::Sepolia, 1_741_159_776, 222_464);
    }

    #[test]
    fn holesky_shanghai_timestamp_maps_to_capella_first_slot() {
        assert_fork(Network::Holesky, 1_696_000_704, 256);
    }

    #[test]
    fn hoodi_prague_timestamp_maps_to_electra_first_slot() {
        assert_fork(Network::Hoodi, 1_742_999_832, 2048);
    }

    #[test]
    fn any_network_genesis_timestamp_is_slot_zero() {
        for network in Network::ALL {
            let chain = network.chain();
            assert_eq!(chain.seconds_per_slot, 12);
            assert_eq!(chain.slot_of_timestamp(chain.genesis_time), Some(0));
            assert_eq!(chain.slot_of_timestamp(chain.genesis_time + 11), Some(0));
            assert_eq!(chain.slot_of_timestamp(chain.genesis_time + 12), Some(1));
        }
    }

    #[test]
    fn any_network_before_genesis_is_none() {
        for network in Network::ALL {
            let chain = network.chain();
            assert_eq!(chain.slot_of_timestamp(chain.genesis_time - 1), None);
            assert_eq!(chain.slot_of_timestamp(0), None);
        }
    }

    #[test]
    fn custom_chain_zero_seconds_per_slot_is_none() {
        let chain = Chain {
            genesis_time: 0,
            seconds_per_slot: 0,
        };
        assert_eq!(chain.slot_of_timestamp(100), None);
    }

    #[test]
    fn custom_chain_extreme_timestamp_does_not_overflow() {
        let chain = Chain {
            genesis_time: 0,
            seconds_per_slot: 1,
        };
        assert_eq!(chain.slot_of_timestamp(u64::MAX), Some(u64::MAX));
    }

    #[test]
    fn name_parsed_back_is_same_network() {
        for network in Network::ALL {
            assert_eq!(network.name().parse::<Network>(), Ok(network));
            assert_eq!(network.to_string(), network.name());
        }
        assert_eq!("Hoodi".parse::<Network>(), Ok(Network::Hoodi));
    }

    #[test]
    fn unknown_name_parse_fails_listing_valid_names() {
        for name in ["", "goerli", "main net", "mainnet ", "hoodi\0"] {
            assert_eq!(name.parse::<Network>(), Err(NetworkError::Unknown));
        }
        assert_eq!(
            NetworkError::Unknown.to_string(),
            "unknown network, expected one of: mainnet, sepolia, holesky, hoodi"
        );
    }
}
