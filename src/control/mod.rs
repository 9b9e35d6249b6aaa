//! Control: the fault injectors collbench applies to hosts and links, and their leases and heal.
//! `proto` owns the control protocol (frames, messages, secrets); `link` owns link faults (down, loss, rate, partition, delay) as typed values and the argv to apply and revert them.

pub mod heal;
pub mod link;
pub mod proto;
