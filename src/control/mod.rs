//! Control: the controller and the agents in ranks, the fault injectors collbench applies to hosts and
//! links, their leases and heal. `proto` is the wire; `controller` the server; `agent` and `hooks` the rank side.

pub mod agent;
pub mod commands;
pub mod controller;
pub mod delayer;
pub mod heal;
pub mod hooks;
pub mod launch;
pub mod link;
pub mod proto;
pub mod relay;
pub mod rendezvous;
pub mod results;
