"""The command-line tools and the local runner: ``cardiomm-simulate`` (:mod:`.simulate`), ``cardiomm-replay``
(:mod:`.replay`, through :mod:`.chain_runner` in process or :mod:`.client` to a Gadgetron server),
``cardiomm-worker`` (:mod:`.worker`), ``cardiomm-view`` (:mod:`.view`) and ``python -m gadgets.tools.demo``
(:mod:`.demo`)."""
