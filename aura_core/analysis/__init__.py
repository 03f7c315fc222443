"""Reading units: response collection, experts, neuron pages, firing and unit profiles."""
