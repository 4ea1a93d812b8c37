"""The simulated Azure Resource Manager: the slice of the AKS REST API the `aks` provisioner
uses, the Entra ID token endpoint azure-identity needs, fault injection and a request log.

It is the one simulated service of the test bed; everything it provisions is real KWOK nodes
in the bed's real Kubernetes. simulator.ArmSimulator is the entry point.
"""
