//! An interface's interrupts from `/proc/interrupts`, `device/msi_irqs` and `/proc/irq/N`.

use std::collections::BTreeSet;
use std::path::Path;

use crate::cpu::CpuSet;

/// One interrupt line of an interface and where the kernel delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Irq {
    /// The IRQ number (`/proc/irq/<number>`).
    pub number: u32,
    /// The rest of its `/proc/interrupts` line after the counts: chip, hardware IRQ, trigger and
    /// the handler names (such as `eth0-TxRx-0` or `virtio0-input.0`); empty when the IRQ
    /// came only from `msi_irqs` and has no line.
    pub description: String,
    /// Interrupts taken per CPU since boot, indexed like the `CPUn` header columns.
    pub counts: Vec<u64>,
    /// The CPUs allowed to take it (`smp_affinity_list`); `None` when unreadable.
    pub affinity: Option<CpuSet>,
    /// The CPUs that actually take it (`effective_affinity_list`); `None` when the kernel or
    /// the interrupt chip does not say.
    pub effective_affinity: Option<CpuSet>,
}

/// A parsed `/proc/interrupts` line with a numeric IRQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterruptLine {
    pub(crate) number: u32,
    pub(crate) counts: Vec<u64>,
    pub(crate) description: String,
}

/// Parses `/proc/interrupts`: a header of `CPUn` columns, then `N: c0 c1 ... description`.
/// Lines with symbolic names (`NMI`, `LOC`) and lines that do not parse are skipped.
pub(crate) fn parse_interrupts(text: &str) -> Vec<InterruptLine> {
    let mut lines = text.lines();
    let ncpus = lines.next().map_or(0, |h| {
        h.split_whitespace()
            .filter(|t| t.starts_with("CPU"))
            .count()
    });
    lines
        .filter_map(|line| {
            let (num, rest) = line.split_once(':')?;
            let number = num.trim().parse().ok()?;
            let mut rest = rest.trim_start();
            let mut counts = Vec::with_capacity(ncpus);
            while counts.len() < ncpus {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let Ok(count) = rest[..end].parse() else {
                    break;
                };
                counts.push(count);
                rest = rest[end..].trim_start();
            }
            Some(InterruptLine {
                number,
                counts,
                description: rest.trim_end().to_owned(),
            })
        })
        .collect()
}

/// Whether a handler token names device `dev`: equal, or `dev` followed by a separator
/// (`eth0-TxRx-3`, `virtio0-input.0`, `eth0@pci`), but not a longer name (`eth01`).
pub(crate) fn names_device(token: &str, dev: &str) -> bool {
    !dev.is_empty()
        && token
            .strip_prefix(dev)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '.', ':', '@', '_', '/']))
}

/// The IRQ numbers of an interface: the device's MSI vectors (`device/msi_irqs`) and every
/// `/proc/interrupts` line whose handler names the interface or its device (the basename of
/// the `device` link, which is how virtio and some drivers name queue interrupts).
pub(crate) fn interface_irqs(
    sys_iface: &Path,
    name: &str,
    lines: &[InterruptLine],
) -> BTreeSet<u32> {
    let mut irqs = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(sys_iface.join("device/msi_irqs")) {
        irqs.extend(
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()),
        );
    }
    let device = std::fs::read_link(sys_iface.join("device"))
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
    for line in lines {
        let named = line
            .description
            .split(|c: char| c.is_whitespace() || c == ',')
            .any(|t| {
                names_device(t, name) || device.as_deref().is_some_and(|d| names_device(t, d))
            });
        if named {
            irqs.insert(line.number);
        }
    }
    irqs
}

/// Reads a CPU list file under `/proc/irq/<n>/`, `None` when absent or unreadable.
pub(crate) fn irq_cpus(proc_root: &Path, number: u32, file: &str) -> Option<CpuSet> {
    let text = std::fs::read_to_string(proc_root.join(format!("irq/{number}/{file}"))).ok()?;
    CpuSet::parse_list(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
           CPU0       CPU1
  0:         22          0   IO-APIC   2-edge      timer
 24:     123456          7   PCI-MSI 512000-edge      eth0-TxRx-0
 25:          3     654321   PCI-MSI 512001-edge      eth0-TxRx-1
 26:          1          0   PCI-MSI 512002-edge      eth01
 27:         10         20   PCI-MSI 49152-edge      virtio0-input.0
 28:          0          0   PCI-MSI 49153-edge      virtio0-config, virtio1-config
NMI:          0          0   Non-maskable interrupts
LOC:    1000000    1000000   Local timer interrupts
";

    #[test]
    fn parses_numbers_counts_and_handlers() {
        let lines = parse_interrupts(SAMPLE);
        assert_eq!(lines.len(), 6, "NMI and LOC are skipped");
        assert_eq!(lines[1].number, 24);
        assert_eq!(lines[1].counts, [123_456, 7]);
        assert_eq!(lines[1].description, "PCI-MSI 512000-edge      eth0-TxRx-0");
        assert_eq!(lines[0].counts, [22, 0]);
    }

    #[test]
    fn matches_the_interface_and_its_device_only() {
        let lines = parse_interrupts(SAMPLE);
        let none = Path::new("/nonexistent");
        let eth0: Vec<_> = interface_irqs(none, "eth0", &lines).into_iter().collect();
        assert_eq!(eth0, [24, 25]);
        assert!(names_device("virtio0-input.0", "virtio0"));
        assert!(!names_device("virtio01-input.0", "virtio0"));
        assert!(!names_device("eth0", ""));
    }

    #[test]
    fn survives_garbage() {
        assert!(parse_interrupts("").is_empty());
        assert!(parse_interrupts("CPU0\n:::\n x: 1\n 5:\n").len() == 1);
    }
}
