//! The VLAN a received datagram is matched by: what rules key on, from the tags [`parse`] found.
//!
//! [`parse`]: super::parse

use super::{Datagram, DropReason};

/// The VLAN id rules match `datagram` by: `None` for an untagged frame or a priority-tagged one
/// (VLAN id 0, which 802.1Q defines as "no VLAN, priority only"), the id of its one tag
/// otherwise, whether the tag was in the frame or offloaded into the ring's frame header, and
/// whatever its TPID (0x8100 or 0x88a8). A frame with two tags is refused with
/// [`DropReason::DoubleTagged`]: a rule names one VLAN, and matching such a frame by either tag
/// alone would relay another network's traffic.
///
/// ```
/// use relay_rules::wire::{Datagram, DropReason, VlanTag, vlan_key};
/// # let frame = [
/// #     0x01, 0x00, 0x5e, 0x01, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
/// #     0x45, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x01, 0x11, 0xbf, 0xcc,
/// #     0x0a, 0x00, 0x00, 0x01, 0xef, 0x01, 0x01, 0x01,
/// #     0x04, 0xd2, 0x13, 0x8c, 0x00, 0x0a, 0x00, 0x00, b'h', b'i',
/// # ];
/// let tag = |vid: u16| VlanTag { tpid: 0x8100, tci: 0x2000 | vid };
/// let datagram = relay_rules::wire::parse(&frame, Some(tag(100)))?;
/// assert_eq!(vlan_key(&datagram), Ok(Some(100)));
/// let untagged = relay_rules::wire::parse(&frame, None)?;
/// assert_eq!(vlan_key(&untagged), Ok(None));
/// let double = Datagram { vlans: [Some(tag(100)), Some(tag(7))], ..datagram };
/// assert_eq!(vlan_key(&double), Err(DropReason::DoubleTagged));
/// # Ok::<(), DropReason>(())
/// ```
#[inline]
pub fn vlan_key(datagram: &Datagram<'_>) -> Result<Option<u16>, DropReason> {
    match datagram.vlans {
        [None, _] => Ok(None),
        [Some(tag), None] => Ok(Some(tag.vid()).filter(|&vid| vid != 0)),
        [Some(_), Some(_)] => Err(DropReason::DoubleTagged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{IpBits, VlanTag};

    fn datagram(vlans: [Option<VlanTag>; 2]) -> Datagram<'static> {
        Datagram {
            vlans,
            source: IpBits::from(std::net::Ipv4Addr::new(10, 0, 0, 1)),
            destination: IpBits::from(std::net::Ipv4Addr::new(239, 1, 1, 1)),
            ipv6: false,
            source_port: 1,
            destination_port: 5000,
            ttl: 1,
            tos: 0,
            ip_id: 0,
            udp_checksum: 0,
            payload: &[],
        }
    }

    #[test]
    fn one_tag_of_either_tpid_keys_by_its_id_and_priority_tags_are_untagged() {
        let tag = |tpid, tci| Some(VlanTag { tpid, tci });
        assert_eq!(vlan_key(&datagram([None, None])), Ok(None));
        assert_eq!(vlan_key(&datagram([tag(0x8100, 100), None])), Ok(Some(100)));
        assert_eq!(
            vlan_key(&datagram([tag(0x88a8, 0xe064), None])),
            Ok(Some(100))
        );
        assert_eq!(vlan_key(&datagram([tag(0x8100, 0xa000), None])), Ok(None));
        assert_eq!(
            vlan_key(&datagram([tag(0x88a8, 10), tag(0x8100, 100)])),
            Err(DropReason::DoubleTagged)
        );
    }
}
