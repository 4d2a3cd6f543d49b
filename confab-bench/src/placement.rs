//! Which node of a cluster each session goes to.

/// How client indexes map onto the nodes given with `--url`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Client i on node i % n: with n >= 2 the two members of a `dm` pair
    /// (2k, 2k+1) are on different nodes.
    RoundRobin,
    /// `dm --same-node`: both members of pair k on node k % n, so the same
    /// pairs can be measured without the broker hop.
    SamePairNode,
}

impl Placement {
    /// The node (an index into the URLs) of client `i` among `nodes`.
    pub fn node_of(self, i: usize, nodes: usize) -> usize {
        let nodes = nodes.max(1);
        match self {
            Placement::RoundRobin => i % nodes,
            Placement::SamePairNode => (i / 2) % nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Placement::{RoundRobin, SamePairNode};

    #[test]
    fn one_node_takes_every_session() {
        for i in 0..10 {
            assert_eq!(RoundRobin.node_of(i, 1), 0);
            assert_eq!(SamePairNode.node_of(i, 1), 0);
        }
    }

    #[test]
    fn round_robin_places_client_i_on_node_i_mod_n() {
        let nodes: Vec<usize> = (0..7).map(|i| RoundRobin.node_of(i, 3)).collect();
        assert_eq!(nodes, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn round_robin_puts_the_members_of_every_pair_on_different_nodes() {
        for n in 2..6 {
            for k in 0..100 {
                assert_ne!(
                    RoundRobin.node_of(2 * k, n),
                    RoundRobin.node_of(2 * k + 1, n),
                    "pair {k} over {n} nodes"
                );
            }
        }
    }

    #[test]
    fn same_node_keeps_pair_k_together_on_node_k_mod_n() {
        let nodes: Vec<usize> = (0..8).map(|i| SamePairNode.node_of(i, 3)).collect();
        assert_eq!(nodes, [0, 0, 1, 1, 2, 2, 0, 0]);
    }

    #[test]
    fn both_placements_spread_sessions_evenly() {
        for placement in [RoundRobin, SamePairNode] {
            let mut count = [0; 3];
            for i in 0..600 {
                count[placement.node_of(i, 3)] += 1;
            }
            assert_eq!(count, [200; 3], "{placement:?}");
        }
    }
}
