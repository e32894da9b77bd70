"""How the project speaks Gadgetron: the wire protocol (:mod:`.wire`, with the limits on what a peer may
make us allocate in :mod:`.wire_limits`), the gadget base class (:mod:`.stream`) and its parameter parser
(:mod:`.params`), the chain format Gadgetron loads (:mod:`.chain_format`), Gadgetron's side of an external
node (:mod:`.external_peer`), a client of a Gadgetron server (:mod:`.gadgetron_client`) and the policy for
checkpoints a peer names (:mod:`.checkpoint_policy`)."""
