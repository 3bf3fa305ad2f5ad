from setuptools import find_packages, setup

setup(name='lpnsr_arch', version='0.1.0', packages=find_packages(include=['lpnsr_arch', 'lpnsr_arch.*']))
