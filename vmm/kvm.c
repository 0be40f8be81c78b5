/* kvm: being written */
