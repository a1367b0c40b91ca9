//! The job's network as the runtime sees it: the mode a workflow or `--network` chose, and the variables
//! that tell the job its published ports.

use runtime::net::NetworkMode;

use crate::workflow::model::NetworkChoice;

/// The runtime's network mode for the user's choice.
pub fn mode(choice: NetworkChoice) -> NetworkMode {
    match choice {
        NetworkChoice::Private => NetworkMode::Private,
        NetworkChoice::Host => NetworkMode::Host,
        NetworkChoice::None => NetworkMode::None,
    }
}

/// `PORT_i` and `JOB_PORT_i` for each published port, in order (the job listens on the same numbers).
pub fn port_env(ports: &[u16]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        env.push((format!("PORT_{i}"), port.to_string()));
        env.push((format!("JOB_PORT_{i}"), port.to_string()));
    }
    env
}
